"""Writes an F32 copy of a GGUF file with gguf-py: same metadata (file type
set to ALL_F32), every tensor dequantized with gguf-py's numpy dequantizers.
llama.cpp on the copy computes with exactly the weights Forge dequantizes,
without quantized-activation dot products.

With a third argument `--f16` the copy is F16 instead (file type MOSTLY_F16;
1-D tensors stay F32, as llama.cpp's converter keeps norms), for speed
comparisons.

Usage: python gguf_to_f32.py IN.gguf OUT.gguf [--f16]
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType
from gguf.quants import dequantize

src, dst = sys.argv[1], sys.argv[2]
f16 = "--f16" in sys.argv[3:]
r = GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = GGUFWriter(dst, arch)
skip = {"general.architecture", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
for key, field in r.fields.items():
    if key in skip:
        continue
    vtype = field.types[0]
    value = field.contents()
    if key == "general.file_type":
        value = 1 if f16 else 0
    if vtype == GGUFValueType.ARRAY:
        w.add_key_value(key, value, vtype, sub_type=field.types[-1])
    else:
        w.add_key_value(key, value, vtype)
for t in r.tensors:
    data = dequantize(t.data, t.tensor_type).astype(np.float32)
    shape = [int(x) for x in reversed(t.shape)]
    if f16 and len(shape) > 1:
        w.add_tensor(t.name, data.reshape(shape).astype(np.float16), raw_dtype=GGMLQuantizationType.F16)
    else:
        w.add_tensor(t.name, data.reshape(shape), raw_dtype=GGMLQuantizationType.F32)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
