//! Config parsing: real-world `config.json` shapes resolve to the expected
//! runtime configs; bad configs are errors naming the key.

use forge_model::{Architecture, Error, HfConfig, ModelConfig, RopeScaling};

fn resolve(json: &str) -> Result<ModelConfig, Error> {
    HfConfig::from_json_str(json, "config.json")?.resolve("config.json")
}

#[test]
fn smollm2_135m() {
    let c = resolve(
        r#"{"architectures":["LlamaForCausalLM"],"attention_bias":false,"bos_token_id":1,
        "eos_token_id":2,"hidden_act":"silu","hidden_size":576,"initializer_range":0.041666666666666664,
        "intermediate_size":1536,"max_position_embeddings":8192,"mlp_bias":false,"model_type":"llama",
        "num_attention_heads":9,"num_hidden_layers":30,"num_key_value_heads":3,"pretraining_tp":1,
        "rms_norm_eps":1e-05,"rope_scaling":null,"rope_theta":100000,"tie_word_embeddings":true,
        "torch_dtype":"bfloat16","transformers_version":"4.42.3","use_cache":true,"vocab_size":49152}"#,
    )
    .expect("resolves");
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers
        ),
        (49152, 576, 1536, 30)
    );
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.rope_theta, 100_000.0);
    assert_eq!(c.rope_scaling, RopeScaling::None);
    assert_eq!(c.rms_norm_eps, 1e-5);
    assert!(c.tie_word_embeddings);
    assert!(!c.attention_qkv_bias && !c.attention_out_bias && !c.mlp_bias);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    assert_eq!(c.max_position_embeddings, 8192);
}

#[test]
fn qwen25_coder_05b() {
    let c = resolve(
        r#"{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,
        "eos_token_id":151643,"hidden_act":"silu","hidden_size":896,"initializer_range":0.02,
        "intermediate_size":4864,"max_position_embeddings":32768,"max_window_layers":24,
        "model_type":"qwen2","num_attention_heads":14,"num_hidden_layers":24,"num_key_value_heads":2,
        "rms_norm_eps":1e-06,"rope_theta":1000000.0,"sliding_window":131072,"tie_word_embeddings":true,
        "torch_dtype":"bfloat16","use_cache":true,"use_sliding_window":false,"vocab_size":151936}"#,
    )
    .expect("resolves");
    assert_eq!(c.architecture, Architecture::Qwen2);
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (14, 2, 64));
    assert!(c.attention_qkv_bias, "qwen2 always has q/k/v biases");
    assert!(!c.attention_out_bias);
    assert_eq!(c.rope_theta, 1_000_000.0);
    assert!(c.tie_word_embeddings);
}

#[test]
fn llama32_1b_rope_scaling() {
    let c = resolve(
        r#"{"architectures":["LlamaForCausalLM"],"bos_token_id":128000,"eos_token_id":[128001,128008,128009],
        "head_dim":64,"hidden_size":2048,"intermediate_size":8192,"max_position_embeddings":131072,
        "model_type":"llama","num_attention_heads":32,"num_hidden_layers":16,"num_key_value_heads":8,
        "rms_norm_eps":1e-05,"rope_scaling":{"factor":32.0,"high_freq_factor":4.0,"low_freq_factor":1.0,
        "original_max_position_embeddings":8192,"rope_type":"llama3"},"rope_theta":500000.0,
        "tie_word_embeddings":true,"vocab_size":128256}"#,
    )
    .expect("resolves");
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!(c.head_dim, 64);
}

#[test]
fn mistral_7b_defaults() {
    let c = resolve(
        r#"{"architectures":["MistralForCausalLM"],"hidden_size":4096,"intermediate_size":14336,
        "model_type":"mistral","num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":8,
        "sliding_window":4096,"vocab_size":32000}"#,
    )
    .expect("resolves");
    assert_eq!(c.architecture, Architecture::Mistral);
    assert_eq!((c.head_dim, c.num_kv_heads), (128, 8));
    // transformers defaults for omitted keys
    assert_eq!(c.rope_theta, 10_000.0);
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert!(!c.tie_word_embeddings);
}

#[test]
fn model_type_from_architectures() {
    let c = resolve(
        r#"{"architectures":["Qwen2ForCausalLM"],"vocab_size":10,"hidden_size":8,
        "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
    )
    .expect("resolves");
    assert_eq!(c.architecture, Architecture::Qwen2);
}

#[test]
fn round_trips_through_hf_json() {
    let c = forge_model::tiny_config(Architecture::Llama)
        .with_rope_scaling(RopeScaling::Linear { factor: 2.0 })
        .with_tie_word_embeddings(true);
    let back = resolve(&c.to_hf_json().to_string()).expect("resolves");
    assert_eq!(back, c);
}

fn err(json: &str) -> String {
    resolve(json).expect_err("must fail").to_string()
}

const BASE: &str =
    r#""vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1"#;

#[test]
fn missing_key_is_named_with_the_file() {
    let e = err(&format!(r#"{{"model_type":"llama",{BASE}}}"#));
    assert_eq!(e, "config.json: missing required key `num_attention_heads`");
    let e = err(r#"{"vocab_size":10}"#);
    assert_eq!(e, "config.json: missing required key `model_type`");
}

#[test]
fn unsupported_model_type() {
    let e = err(&format!(
        r#"{{"model_type":"gpt2",{BASE},"num_attention_heads":2}}"#
    ));
    assert_eq!(
        e,
        r#"config.json: `model_type` is "gpt2", expected one of "llama", "qwen2", "mistral""#
    );
}

#[test]
fn hidden_not_divisible_by_heads() {
    let e = err(&format!(
        r#"{{"model_type":"llama",{BASE},"num_attention_heads":3}}"#
    ));
    assert!(e.contains("`hidden_size` is 8"), "{e}");
    assert!(e.contains("multiple of num_attention_heads (3)"), "{e}");
}

#[test]
fn kv_heads_must_divide_heads() {
    let e = err(&format!(
        r#"{{"model_type":"llama",{BASE},"num_attention_heads":4,"num_key_value_heads":3}}"#
    ));
    assert_eq!(
        e,
        "config.json: `num_key_value_heads` is 3, expected a divisor of num_attention_heads (4)"
    );
}

#[test]
fn unsupported_rope_scaling() {
    let e = err(&format!(
        r#"{{"model_type":"llama",{BASE},"num_attention_heads":2,"rope_scaling":{{"rope_type":"yarn","factor":4}}}}"#
    ));
    assert!(e.contains("`rope_scaling.rope_type` is \"yarn\""), "{e}");
    let e = err(&format!(
        r#"{{"model_type":"llama",{BASE},"num_attention_heads":2,"rope_scaling":{{"rope_type":"llama3"}}}}"#
    ));
    assert_eq!(e, "config.json: missing required key `rope_scaling.factor`");
}

#[test]
fn wrong_type_names_the_key() {
    let e = err(r#"{"model_type":"llama","hidden_size":"big"}"#);
    assert!(
        e.starts_with("config.json: `hidden_size` is of the wrong type"),
        "{e}"
    );
}

#[test]
fn unsupported_activation() {
    let e = err(&format!(
        r#"{{"model_type":"llama",{BASE},"num_attention_heads":2,"hidden_act":"gelu"}}"#
    ));
    assert_eq!(e, r#"config.json: `hidden_act` is "gelu", expected "silu""#);
}

#[test]
fn zero_values_rejected() {
    let e = err(
        r#"{"model_type":"llama","vocab_size":0,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
    );
    assert_eq!(
        e,
        "config.json: `vocab_size` is 0, expected a positive integer"
    );
}

#[test]
fn invalid_json_names_the_file() {
    let e = err("{not json");
    assert!(e.starts_with("config.json: invalid JSON"), "{e}");
}

#[test]
fn unknown_keys_are_kept() {
    let c = HfConfig::from_json_str(
        r#"{"model_type":"llama","some_future_key":[1,2]}"#,
        "config.json",
    )
    .expect("parses");
    assert_eq!(c.extra["some_future_key"], serde_json::json!([1, 2]));
}
