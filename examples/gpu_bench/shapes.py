"""The two benchmark shapes, as `gpu_bench` (main.rs) builds them."""

SHAPES = {
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536,
                    num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0),
    "llama1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192,
                    num_attention_heads=32, num_key_value_heads=8, rope_theta=500000.0),
}
COMMON = dict(vocab_size=49152, rms_norm_eps=1e-5, tie_word_embeddings=True)
LORA_LAYERS = 16
RANK = 8
SCALE = 20.0
LR = 1e-5


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")
