#!/usr/bin/env python3
"""Reference dump of a GGUF file by gguf-py (gguf==0.19.0), for tests/dump.rs.

Usage: dump_ref.py FILE  -> JSON on stdout, in the shape of forge's
`forge_gguf::dump::to_json` so the two can be compared field by field:
type names are mapped to forge's (UINT32 -> u32, ...), arrays longer than 32
elements keep their first 8, tensor offsets are relative to the data section.
"""

import json
import sys

from gguf import GGUFReader, GGUFValueType

NAMES = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}
LIMIT, HEAD = 32, 8


def main(path):
    r = GGUFReader(path)
    metadata = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue  # gguf-py's pseudo-fields for the header
        ty = NAMES[field.types[0]]
        entry = {"key": key, "type": ty}
        value = field.contents()
        if ty == "array":
            entry["element_type"] = NAMES[field.types[1]]
            entry["length"] = len(field.data)
            entry["truncated"] = len(value) > LIMIT
            entry["value"] = value[:HEAD] if len(value) > LIMIT else value
        else:
            entry["value"] = value
        metadata.append(entry)
    tensors = [
        {
            "index": i,
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset) - int(r.data_offset),
            "bytes": int(t.n_bytes),
        }
        for i, t in enumerate(r.tensors)
    ]
    doc = {
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }
    json.dump(doc, sys.stdout, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
