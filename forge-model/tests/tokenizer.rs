//! Tokenizer files, special tokens and chat templates.

use forge_model::{
    Architecture, CHATML_TEMPLATE, ChatMessage, Tokenizer, random_model, render_chat_template,
    tiny_config, write_hf_dir,
};

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let m = random_model(tiny_config(Architecture::Qwen2), 1).expect("model");
    write_hf_dir(&m, dir.path()).expect("write");
    dir
}

#[test]
fn chatml_renders_exactly() {
    let messages = [
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Sum 2+2."),
        ChatMessage::new("assistant", "4"),
        ChatMessage::new("user", "And 3+3?"),
    ];
    let text = render_chat_template(CHATML_TEMPLATE, &messages, true, "", "").expect("render");
    assert_eq!(
        text,
        "<|im_start|>system\nYou are terse.<|im_end|>\n\
         <|im_start|>user\nSum 2+2.<|im_end|>\n\
         <|im_start|>assistant\n4<|im_end|>\n\
         <|im_start|>user\nAnd 3+3?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let no_prompt =
        render_chat_template(CHATML_TEMPLATE, &messages[..1], false, "", "").expect("render");
    assert_eq!(no_prompt, "<|im_start|>system\nYou are terse.<|im_end|>\n");
}

#[test]
fn hf_style_template_with_python_methods() {
    // The shape of Llama/Mistral templates: bos, python string methods,
    // raise_exception, trim_blocks.
    let template = "{{ bos_token }}{% for m in messages %}\n\
        {% if m['role'] == 'user' %}[INST] {{ m['content'].strip() }} [/INST]\
        {% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}\
        {% else %}{{ raise_exception('unknown role ' + m['role']) }}{% endif %}\n\
        {% endfor %}";
    let messages = [
        ChatMessage::new("user", "  hi  "),
        ChatMessage::new("assistant", "hello"),
    ];
    let text = render_chat_template(template, &messages, false, "<s>", "</s>").expect("render");
    assert_eq!(text, "<s>[INST] hi [/INST]hello</s>");
    let e = render_chat_template(
        template,
        &[ChatMessage::new("tool", "x")],
        false,
        "<s>",
        "</s>",
    )
    .expect_err("raises");
    assert!(e.to_string().contains("unknown role tool"), "{e}");
    let e = render_chat_template("{% for %}", &messages, false, "", "").expect_err("syntax");
    assert!(e.to_string().starts_with("chat template:"), "{e}");
}

#[test]
fn folder_tokenizer_special_tokens_and_template() {
    let dir = tiny_dir();
    let tok = Tokenizer::from_hf_dir(dir.path()).expect("tokenizer");
    assert_eq!(tok.vocab_size(), 259);
    assert_eq!(tok.eos_ids(), [0]);
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    let text = "fn main() { println!(\"héllo ✓\"); }";
    let ids = tok.encode(text, true).expect("encode");
    // Byte-level with no merges: one token per byte, id = 3 + byte.
    assert_eq!(
        ids,
        text.bytes().map(|b| 3 + u32::from(b)).collect::<Vec<_>>()
    );
    assert_eq!(tok.decode(&ids, true).expect("decode"), text);
    // Special tokens in text are single ids.
    let ids = tok.encode("<|im_start|>user", false).expect("encode");
    assert_eq!(ids[0], 1);
    let chat = tok
        .apply_chat_template(&[ChatMessage::new("user", "hi")], true)
        .expect("template");
    assert_eq!(
        chat,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn template_from_tokenizer_config_wins() {
    let dir = tiny_dir();
    let cfg_path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    cfg["chat_template"] =
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}".into();
    cfg["eos_token"] = serde_json::json!({"content": "<|im_end|>", "special": true});
    std::fs::write(&cfg_path, cfg.to_string()).expect("write");
    let tok = Tokenizer::from_hf_dir(dir.path()).expect("tokenizer");
    // eos from tokenizer_config (object form) plus generation_config.json
    assert_eq!(tok.eos_ids(), [2, 0]);
    let text = tok
        .apply_chat_template(&[ChatMessage::new("user", "q")], true)
        .expect("render");
    assert_eq!(text, "<user>q");
}

#[test]
fn broken_tokenizer_json_names_the_file() {
    let dir = tiny_dir();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 3}").expect("write");
    let e = Tokenizer::from_hf_dir(dir.path()).expect_err("broken");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: tokenizer:", path.display())),
        "{e}"
    );
}
