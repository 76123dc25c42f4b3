namespace PtLab.Traces;

/// <summary>
/// Checks a Parquet footer (Thrift compact protocol) before Parquet.Net decodes it. Parquet.Net
/// reads each field it knows by its id, whatever type the footer declares, and reads the end of
/// its buffer as bytes of 0xff: a footer that runs short, or declares a field with another type,
/// sent it reading past the end for ever. So a footer is accepted only if every field of every
/// struct is one a trace's writer produces, with the type it produces, and the whole footer is one
/// struct that ends exactly at the footer's end. Then Parquet.Net's decoding reads what this check
/// read, inside the buffer.
/// </summary>
internal static class FooterCheck
{
    private const byte Bool = 1; // a struct field's bool: the value is the type, 1 true or 2 false
    private const byte Byte = 3;
    private const byte I16 = 4;
    private const byte I32 = 5;
    private const byte I64 = 6;
    private const byte Binary = 8;
    private const byte List = 9;
    private const byte Struct = 12;

    private const int MaxDepth = 16;

    /// <summary>A field a struct may hold: its type, and for a list its element type, for a struct (or a list of them) the struct.</summary>
    private readonly record struct Field(byte Type, byte Element = 0, string? Of = null);

    // The structs of parquet.thrift a trace's footer holds (FileMetaData and what it reaches), with
    // the fields the writer may set.
    private static readonly Dictionary<string, Dictionary<short, Field>> s_structs = new()
    {
        ["FileMetaData"] = new()
        {
            [1] = new(I32),
            [2] = new(List, Struct, "SchemaElement"),
            [3] = new(I64),
            [4] = new(List, Struct, "RowGroup"),
            [5] = new(List, Struct, "KeyValue"),
            [6] = new(Binary),
            [7] = new(List, Struct, "ColumnOrder"),
        },
        ["SchemaElement"] = new()
        {
            [1] = new(I32),
            [2] = new(I32),
            [3] = new(I32),
            [4] = new(Binary),
            [5] = new(I32),
            [6] = new(I32),
            [7] = new(I32),
            [8] = new(I32),
            [9] = new(I32),
            [10] = new(Struct, Of: "LogicalType"),
        },
        ["LogicalType"] = new()
        {
            [1] = new(Struct, Of: "Empty"), // STRING
            [10] = new(Struct, Of: "IntType"),
        },
        ["Empty"] = [],
        ["IntType"] = new() { [1] = new(Byte), [2] = new(Bool) },
        ["ColumnOrder"] = new() { [1] = new(Struct, Of: "Empty") },
        ["KeyValue"] = new() { [1] = new(Binary), [2] = new(Binary) },
        ["RowGroup"] = new()
        {
            [1] = new(List, Struct, "ColumnChunk"),
            [2] = new(I64),
            [3] = new(I64),
            [5] = new(I64),
            [6] = new(I64),
            [7] = new(I16),
        },
        ["ColumnChunk"] = new()
        {
            [1] = new(Binary),
            [2] = new(I64),
            [3] = new(Struct, Of: "ColumnMetaData"),
            [4] = new(I64),
            [5] = new(I32),
            [6] = new(I64),
            [7] = new(I32),
        },
        ["ColumnMetaData"] = new()
        {
            [1] = new(I32),
            [2] = new(List, I32),
            [3] = new(List, Binary),
            [4] = new(I32),
            [5] = new(I64),
            [6] = new(I64),
            [7] = new(I64),
            [9] = new(I64),
            [10] = new(I64),
            [11] = new(I64),
            [12] = new(Struct, Of: "Statistics"),
            [13] = new(List, Struct, "PageEncodingStats"),
        },
        ["Statistics"] = new()
        {
            [1] = new(Binary),
            [2] = new(Binary),
            [3] = new(I64),
            [4] = new(I64),
            [5] = new(Binary),
            [6] = new(Binary),
            [7] = new(Bool),
            [8] = new(Bool),
        },
        ["PageEncodingStats"] = new() { [1] = new(I32), [2] = new(I32), [3] = new(I32) },
    };

    /// <summary>Why <paramref name="footer"/> is not a footer a trace's writer makes, or null.</summary>
    public static string? Check(ReadOnlySpan<byte> footer)
    {
        int pos = 0;
        string? error = ReadStruct(footer, ref pos, "FileMetaData", 0);
        if (error is null && pos != footer.Length)
        {
            error = $"the footer's struct ends at byte {pos} of {footer.Length}";
        }

        return error;
    }

    private static string? ReadStruct(ReadOnlySpan<byte> f, ref int pos, string name, int depth)
    {
        if (depth > MaxDepth)
        {
            return $"structs nested deeper than {MaxDepth}";
        }

        var fields = s_structs[name];
        short last = 0;
        while (true)
        {
            if (pos >= f.Length)
            {
                return $"{name} runs past the end of the footer";
            }

            byte header = f[pos++];
            if (header == 0)
            {
                return null;
            }

            byte type = (byte)(header & 0xf);
            int delta = header >> 4;
            short id;
            if (delta != 0)
            {
                id = (short)(last + delta);
            }
            else
            {
                if (!ReadVarint(f, ref pos, 3, out ulong z))
                {
                    return $"{name}: a field id runs past the end of the footer";
                }

                id = (short)((long)(z >> 1) ^ -(long)(z & 1));
            }

            last = id;
            if (!fields.TryGetValue(id, out var field))
            {
                return $"{name} field {id} is not one a trace's footer holds";
            }

            // A struct field's bool carries its value in the type: true (1) or false (2).
            bool typeOk = field.Type == Bool ? type is 1 or 2 : type == field.Type;
            if (!typeOk)
            {
                return $"{name} field {id} has type {type}, expected {field.Type}";
            }

            string? error = ReadValue(f, ref pos, field, $"{name} field {id}", depth);
            if (error is not null)
            {
                return error;
            }
        }
    }

    private static string? ReadValue(ReadOnlySpan<byte> f, ref int pos, Field field, string where, int depth)
    {
        switch (field.Type)
        {
            case Bool:
                return null;
            case Byte:
                return pos++ < f.Length ? null : $"{where} runs past the end of the footer";
            case I16 or I32 or I64:
                return ReadVarint(f, ref pos, field.Type == I64 ? 10 : field.Type == I32 ? 5 : 3, out _) ? null : $"{where}: a varint runs past the end of the footer or over its size";
            case Binary:
                if (!ReadVarint(f, ref pos, 5, out ulong length) || length > (ulong)(f.Length - pos))
                {
                    return $"{where}: a string runs past the end of the footer";
                }

                pos += (int)length;
                return null;
            case Struct:
                return ReadStruct(f, ref pos, field.Of!, depth + 1);
            default: // a list
                if (pos >= f.Length)
                {
                    return $"{where} runs past the end of the footer";
                }

                byte header = f[pos++];
                ulong count = (ulong)(header >> 4);
                if (count == 15 && !ReadVarint(f, ref pos, 5, out count))
                {
                    return $"{where}: a list size runs past the end of the footer";
                }

                if ((header & 0xf) != field.Element)
                {
                    return $"{where}: list elements of type {header & 0xf}, expected {field.Element}";
                }

                // Every element takes at least a byte: a count larger than what is left cannot be.
                if (count > (ulong)(f.Length - pos))
                {
                    return $"{where}: a list of {count} elements in {f.Length - pos} bytes";
                }

                var element = new Field(field.Element, Of: field.Of);
                for (ulong i = 0; i < count; i++)
                {
                    string? error = ReadValue(f, ref pos, element, where, depth + 1);
                    if (error is not null)
                    {
                        return error;
                    }
                }

                return null;
        }
    }

    private static bool ReadVarint(ReadOnlySpan<byte> f, ref int pos, int maxBytes, out ulong value)
    {
        value = 0;
        for (int i = 0; i < maxBytes; i++)
        {
            if (pos >= f.Length)
            {
                return false;
            }

            byte b = f[pos++];
            value |= (ulong)(b & 0x7f) << (7 * i);
            if ((b & 0x80) == 0)
            {
                return true;
            }
        }

        return false;
    }
}
