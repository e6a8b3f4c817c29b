//! KV cache, sampling and the streaming APIs.

use forge_mlx::mlx_rs::Array;
use forge_model::{
    Architecture, FinishReason, GenerateOptions, Generator, LoadOptions, Model, ModelSource,
    RopeScaling, Sampler, Tokenizer, load, random_model, tiny_config, write_hf_dir,
};

fn model(arch: Architecture) -> Model {
    random_model(tiny_config(arch), 21).expect("model")
}

fn rows(a: &Array, vocab: usize) -> Vec<Vec<f32>> {
    a.eval().expect("eval");
    a.as_slice::<f32>()
        .chunks(vocab)
        .map(<[f32]>::to_vec)
        .collect()
}

#[test]
fn kv_cache_incremental_equals_full_sequence() {
    let ids: Vec<i32> = vec![4, 18, 200, 7, 7, 130, 66, 2, 90, 11];
    for arch in Architecture::ALL {
        let mut m = random_model(
            tiny_config(arch).with_rope_scaling(RopeScaling::Linear { factor: 2.0 }),
            3,
        )
        .expect("model");
        let vocab = m.config().vocab_size;
        let full = m
            .forward(&Array::from_slice(&ids, &[1, ids.len() as i32]), None)
            .expect("full");
        let full = rows(&full, vocab);
        // Prefill 4 tokens, then a chunk of 3, then one at a time.
        let mut cache = m.new_cache();
        let mut inc = Vec::new();
        for chunk in [&ids[..4], &ids[4..7], &ids[7..8], &ids[8..9], &ids[9..]] {
            let out = m
                .forward(
                    &Array::from_slice(chunk, &[1, chunk.len() as i32]),
                    Some(&mut cache),
                )
                .expect("step");
            inc.extend(rows(&out, vocab));
        }
        assert_eq!(cache.offset(), ids.len());
        let diff = full
            .iter()
            .zip(&inc)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        println!("{arch}: max |incremental - full| = {diff:.3e}");
        assert!(diff <= 1e-5, "{arch}: {diff}");
    }
}

#[test]
fn greedy_equals_argmax_of_full_forward() {
    let mut m = model(Architecture::Llama);
    let prompt = [5u32, 6, 7];
    let opts = GenerateOptions::new()
        .with_max_tokens(8)
        .with_stop_at_eos(false);
    let generated: Vec<u32> = m
        .generate_ids(&prompt, &opts)
        .expect("gen")
        .collect::<Result<_, _>>()
        .expect("tokens");
    assert_eq!(generated.len(), 8);
    // Recompute each step without a cache.
    let mut seq: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    let vocab = m.config().vocab_size;
    for &t in &generated {
        let out = m
            .forward(&Array::from_slice(&seq, &[1, seq.len() as i32]), None)
            .expect("fwd");
        let last = rows(&out, vocab).pop().expect("row");
        let argmax = (0..vocab)
            .max_by(|&a, &b| last[a].total_cmp(&last[b]).then(b.cmp(&a)))
            .expect("argmax") as u32;
        assert_eq!(t, argmax);
        seq.push(t as i32);
    }
}

#[test]
fn seeded_sampling_is_deterministic() {
    let mut m = model(Architecture::Qwen2);
    let opts = |seed| {
        GenerateOptions::new()
            .with_max_tokens(24)
            .with_temperature(1.0)
            .with_top_k(50)
            .with_top_p(0.95)
            .with_repetition_penalty(1.1)
            .with_seed(seed)
            .with_stop_at_eos(false)
    };
    let run = |m: &mut Model, seed| -> Vec<u32> {
        m.generate_ids(&[1, 2, 3], &opts(seed))
            .expect("gen")
            .collect::<Result<_, _>>()
            .expect("tokens")
    };
    let a = run(&mut m, 7);
    let b = run(&mut m, 7);
    let c = run(&mut m, 8);
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "different seed, different tokens");
}

#[test]
fn stop_tokens_end_generation_unemitted() {
    let mut m = model(Architecture::Llama);
    let opts = GenerateOptions::new()
        .with_max_tokens(30)
        .with_stop_at_eos(false);
    let free: Vec<u32> = m
        .generate_ids(&[9, 8], &opts)
        .expect("gen")
        .collect::<Result<_, _>>()
        .expect("tokens");
    let stop = free[3];
    let first = free.iter().position(|&t| t == stop).expect("present");
    let mut stream = m
        .generate_ids(&[9, 8], &opts.clone().with_stop_tokens([stop]))
        .expect("gen");
    let stopped: Vec<u32> = stream.by_ref().collect::<Result<_, _>>().expect("tokens");
    assert_eq!(stopped, free[..first]);
    assert_eq!(stream.finish_reason(), Some(FinishReason::StopToken));
}

#[test]
fn candidates_top_k_top_p_exact() {
    // softmax([ln 4, ln 3, ln 2, ln 1]) = [0.4, 0.3, 0.2, 0.1]
    let logits: Vec<f32> = [4.0f32, 3.0, 2.0, 1.0].iter().map(|p| p.ln()).collect();
    let sampler = |o: GenerateOptions| Sampler::new(&o.with_temperature(1.0)).expect("sampler");
    let close = |got: Vec<(u32, f32)>, want: &[(u32, f32)]| {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((gi, gp), (wi, wp)) in got.iter().zip(want) {
            assert_eq!(gi, wi, "{got:?}");
            assert!((gp - wp).abs() < 1e-6, "{got:?}");
        }
    };
    close(
        sampler(GenerateOptions::new()).candidates(&logits),
        &[(0, 0.4), (1, 0.3), (2, 0.2), (3, 0.1)],
    );
    close(
        sampler(GenerateOptions::new().with_top_k(2)).candidates(&logits),
        &[(0, 4.0 / 7.0), (1, 3.0 / 7.0)],
    );
    // top-p 0.6: 0.4 < 0.6 so token 1 joins; 0.7 >= 0.6 stops.
    close(
        sampler(GenerateOptions::new().with_top_p(0.6)).candidates(&logits),
        &[(0, 4.0 / 7.0), (1, 3.0 / 7.0)],
    );
    close(
        sampler(GenerateOptions::new().with_top_p(0.3)).candidates(&logits),
        &[(0, 1.0)],
    );
    // top-k 3 then top-p 0.8 of the renormalised [4/9, 3/9, 2/9]: 7/9 < 0.8 keeps all 3.
    close(
        sampler(GenerateOptions::new().with_top_k(3).with_top_p(0.8)).candidates(&logits),
        &[(0, 4.0 / 9.0), (1, 3.0 / 9.0), (2, 2.0 / 9.0)],
    );
    // Temperature 0.5 squares the odds: [16, 9, 4, 1] / 30.
    let s = Sampler::new(&GenerateOptions::new().with_temperature(0.5)).expect("sampler");
    close(
        s.candidates(&logits),
        &[
            (0, 16.0 / 30.0),
            (1, 9.0 / 30.0),
            (2, 4.0 / 30.0),
            (3, 1.0 / 30.0),
        ],
    );
    // Greedy; ties go to the lower id.
    let g = Sampler::new(&GenerateOptions::new()).expect("sampler");
    assert_eq!(g.candidates(&[1.0, 3.0, 3.0]), vec![(1, 1.0)]);
}

/// The sampler's distribution as a sort of the whole vocabulary defines it
/// (higher logit first, then lower id; greedy = the first; top-k = the
/// first k; then temperature and top-p), for [`candidates_equal_full_sort`].
fn candidates_by_full_sort(
    temperature: f32,
    top_k: usize,
    top_p: f32,
    logits: &[f32],
) -> Vec<(u32, f32)> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if order.is_empty() {
        return Vec::new();
    }
    if temperature == 0.0 {
        return vec![(order[0], 1.0)];
    }
    if top_k > 0 {
        order.truncate(top_k);
    }
    let t = f64::from(temperature);
    let max = f64::from(logits[order[0] as usize]) / t;
    let w: Vec<f64> = order
        .iter()
        .map(|&i| (f64::from(logits[i as usize]) / t - max).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let (mut kept, mut mass) = (Vec::new(), 0.0);
    for (&id, w) in order.iter().zip(&w) {
        if mass >= f64::from(top_p) {
            break;
        }
        kept.push((id, w / total));
        mass += w / total;
    }
    let kt: f64 = kept.iter().map(|(_, p)| p).sum();
    kept.into_iter()
        .map(|(id, p)| (id, (p / kt) as f32))
        .collect()
}

proptest::proptest! {
    /// Greedy's single pass and top-k's partial sort give exactly what a
    /// sort of the whole vocabulary gives, ties (few distinct values) included.
    #[test]
    fn candidates_equal_full_sort(
        raw in proptest::collection::vec(0u8..12, 1..300),
        temperature in proptest::sample::select(vec![0.0f32, 0.7, 1.0]),
        top_k in proptest::sample::select(vec![0usize, 1, 2, 5, 40, 1000]),
        top_p in proptest::sample::select(vec![1.0f32, 0.9, 0.5]),
    ) {
        let logits: Vec<f32> = raw.iter().map(|&v| f32::from(v) * 0.5 - 2.0).collect();
        let o = GenerateOptions::new()
            .with_temperature(temperature)
            .with_top_k(top_k)
            .with_top_p(top_p);
        let got = Sampler::new(&o).expect("sampler").candidates(&logits);
        proptest::prop_assert_eq!(got, candidates_by_full_sort(temperature, top_k, top_p, &logits));
    }
}

#[test]
fn repetition_penalty_exact() {
    let s = Sampler::new(&GenerateOptions::new().with_repetition_penalty(2.0)).expect("s");
    let mut logits = vec![4.0f32, -4.0, 1.0, 3.0];
    s.penalize(&mut logits, &[0, 1, 1]);
    assert_eq!(logits, vec![2.0, -8.0, 1.0, 3.0]);
    let s = Sampler::new(
        &GenerateOptions::new()
            .with_repetition_penalty(2.0)
            .with_repetition_window(1),
    )
    .expect("s");
    let mut logits = vec![4.0f32, -4.0, 1.0, 3.0];
    s.penalize(&mut logits, &[0, 3]);
    assert_eq!(logits, vec![4.0, -4.0, 1.0, 1.5]);
}

#[test]
fn bad_options_are_errors() {
    for (opts, name) in [
        (GenerateOptions::new().with_temperature(-1.0), "temperature"),
        (GenerateOptions::new().with_top_p(0.0), "top_p"),
        (
            GenerateOptions::new().with_repetition_penalty(0.0),
            "repetition_penalty",
        ),
    ] {
        let e = Sampler::new(&opts).expect_err("invalid");
        assert!(
            e.to_string().starts_with(&format!("option `{name}`")),
            "{e}"
        );
    }
    let mut m = model(Architecture::Llama);
    assert!(m.generate_ids(&[], &GenerateOptions::new()).is_err());
    let e = m
        .generate_ids(&[100_000], &GenerateOptions::new())
        .expect_err("oov");
    assert!(e.to_string().contains("token id 100000"), "{e}");
}

fn tiny_with_tokenizer() -> (tempfile::TempDir, Model, Tokenizer) {
    let dir = tempfile::tempdir().expect("tmp");
    let m = random_model(tiny_config(Architecture::Llama), 4).expect("model");
    write_hf_dir(&m, dir.path()).expect("write");
    let loaded = load(
        &ModelSource::HfDir(dir.path().to_path_buf()),
        &LoadOptions::new(),
    )
    .expect("load");
    let tok = loaded.tokenizer.expect("tokenizer");
    (dir, loaded.model, tok)
}

#[test]
fn text_stream_equals_generate_and_batch() {
    let (_dir, mut m, tok) = tiny_with_tokenizer();
    let opts = GenerateOptions::new()
        .with_max_tokens(16)
        .with_temperature(0.8)
        .with_seed(3)
        .with_stop_at_eos(false);
    let mut g = Generator::new(&mut m, &tok);
    let streamed: String = g
        .stream("def f(x):", &opts)
        .expect("stream")
        .collect::<Result<_, _>>()
        .expect("text");
    let whole = g.generate("def f(x):", &opts).expect("generate");
    assert_eq!(streamed, whole.text);
    assert_eq!(whole.tokens.len(), 16);
    assert_eq!(whole.finish_reason, FinishReason::MaxTokens);
    let batch = g
        .generate_batch(&["def f(x):", "hello"], &opts)
        .expect("batch");
    assert_eq!(batch[0], whole);
    assert_eq!(batch[1], g.generate("hello", &opts).expect("single"));
}

#[test]
fn stop_strings_cut_the_text() {
    let (_dir, mut m, tok) = tiny_with_tokenizer();
    let opts = GenerateOptions::new()
        .with_max_tokens(24)
        .with_stop_at_eos(false);
    let mut g = Generator::new(&mut m, &tok);
    let free = g.generate("abc", &opts).expect("generate");
    let chars: Vec<char> = free.text.chars().collect();
    assert!(chars.len() > 6, "{:?}", free.text);
    let stop: String = chars[4..6].iter().collect();
    let expected_cut = free.text.find(&stop).expect("stop occurs");
    let cut = g
        .generate("abc", &opts.clone().with_stop_strings([stop.clone()]))
        .expect("generate");
    assert_eq!(cut.text, free.text[..expected_cut]);
    assert_eq!(cut.finish_reason, FinishReason::StopString);
    // The streamed pieces never contain the stop string.
    let mut stream = g
        .stream("abc", &opts.with_stop_strings([stop.clone()]))
        .expect("stream");
    let pieces: Vec<String> = stream.by_ref().collect::<Result<_, _>>().expect("text");
    assert_eq!(pieces.concat(), cut.text);
    assert_eq!(stream.finish_reason(), Some(FinishReason::StopString));
}

#[test]
fn eos_from_tokenizer_stops_generation() {
    let (_dir, mut m, tok) = tiny_with_tokenizer();
    assert_eq!(tok.eos_ids(), [0]);
    // Make token 0 (eos) certain by biasing the head row.
    {
        let head = m.lm_head.as_mut().expect("untied");
        let w = head.weight.as_ref().clone();
        let shape = w.shape().to_vec();
        let mut values = w.as_slice::<f32>().to_vec();
        let hidden = shape[1] as usize;
        for v in &mut values[..hidden] {
            *v = 0.0;
        }
        *head.weight = Array::from_slice(&values, &shape);
        head.bias = forge_mlx::mlx_rs::module::Param::new(Some({
            let mut b = vec![0.0f32; shape[0] as usize];
            b[0] = 1e4;
            Array::from_slice(&b, &[shape[0]])
        }));
    }
    let mut g = Generator::new(&mut m, &tok);
    let out = g
        .generate("x", &GenerateOptions::new().with_max_tokens(10))
        .expect("generate");
    assert!(out.tokens.is_empty());
    assert_eq!(out.finish_reason, FinishReason::StopToken);
}

#[test]
fn rope_scalings_change_the_logits() {
    // Guards the mlx-lm comparisons: each scaling must actually take effect.
    let ids: Vec<i32> = (0..40).map(|i| i * 7 % 250).collect();
    let tokens = Array::from_slice(&ids, &[1, ids.len() as i32]);
    let base = tiny_config(Architecture::Llama).with_rope_theta(500_000.0);
    let scalings = [
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        },
    ];
    let outs: Vec<Vec<Vec<f32>>> = scalings
        .iter()
        .map(|s| {
            let mut m = random_model(base.clone().with_rope_scaling(*s), 9).expect("model");
            let out = m.forward(&tokens, None).expect("fwd");
            rows(&out, m.config().vocab_size)
        })
        .collect();
    assert_ne!(outs[0], outs[1]);
    assert_ne!(outs[0], outs[2]);
    assert_ne!(outs[1], outs[2]);
}

#[test]
fn forward_last_equals_last_row_of_forward() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let mut m = model(arch);
        let vocab = m.config().vocab_size;
        let tokens = Array::from_slice(&[3i32, 9, 27, 81, 243, 5], &[1, 6]);
        let full = rows(&m.forward(&tokens, None).expect("forward"), vocab);
        let mut cache = m.new_cache();
        let last = m.forward_last(&tokens, Some(&mut cache)).expect("last");
        assert_eq!(last.shape(), &[1, 1, vocab as i32]);
        let last = rows(&last, vocab);
        let diff = full[5]
            .iter()
            .zip(&last[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{arch}: {diff}");
        assert_eq!(cache.offset(), 6);
    }
}
