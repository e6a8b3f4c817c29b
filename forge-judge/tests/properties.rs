//! Property tests (proptest): Levenshtein is a metric and edit similarity stays in [0, 1];
//! the gate's regression rules respect the metric's direction; CodeBLEU of a text against
//! itself does not depend on the batch it is scored in.

use std::collections::BTreeMap;

use forge_judge::{CodeBleu, Gate, Lang, Rule, edit_similarity, levenshtein};
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab é\n]{0,12}").expect("regex")
}

proptest! {
    #[test]
    fn levenshtein_is_a_metric(a in text(), b in text(), c in text()) {
        prop_assert_eq!(levenshtein(&a, &a), 0);
        prop_assert_eq!(levenshtein(&a, &b), levenshtein(&b, &a));
        prop_assert!(levenshtein(&a, &c) <= levenshtein(&a, &b) + levenshtein(&b, &c));
        let (na, nb) = (a.chars().count(), b.chars().count());
        prop_assert!(levenshtein(&a, &b) >= na.abs_diff(nb));
        prop_assert!(levenshtein(&a, &b) <= na.max(nb));
        let s = edit_similarity(&a, &b);
        prop_assert!((0.0..=1.0).contains(&s));
        prop_assert_eq!(s == 1.0, a == b);
    }

    #[test]
    fn regression_rules_follow_the_direction(base in 0.5f64..10.0, delta in -1.0f64..1.0, eps in 0.0f64..0.5) {
        for metric in ["codebleu", "perplexity"] {
            let gate = Gate::new(vec![Rule::new(metric).with_max_regression(eps)]).expect("gate");
            let c: BTreeMap<String, f64> = [(metric.to_string(), base + delta)].into();
            let b: BTreeMap<String, f64> = [(metric.to_string(), base)].into();
            // How much worse the candidate is, in the metric's own direction.
            let d = (base + delta) - base;
            let worse_by = if metric == "perplexity" { d } else { -d };
            let v = gate.evaluate(&c, &b);
            prop_assert_eq!(v.passed, worse_by <= eps);
            prop_assert_eq!(v.passed, v.reasons().count() == 0);
        }
    }

    #[test]
    fn batch_scores_equal_single_scores(xs in proptest::collection::vec(0u8..4, 1..6)) {
        let snippets = ["x = a + b\n", "def f(a):\n    return a * 2\n", "y = [i for i in range(3)]\n", "if x:\n    y = 1\nelse:\n    y = 2\n"];
        let pairs: Vec<(&str, &str)> = xs.windows(2).map(|w| (snippets[w[0] as usize], snippets[w[1] as usize])).chain(xs.iter().map(|&i| (snippets[i as usize], snippets[i as usize]))).collect();
        let cb = CodeBleu::new(Lang::Python);
        let batch = cb.score_batch(&pairs);
        for ((r, c), s) in pairs.iter().zip(&batch) {
            prop_assert_eq!(&cb.score(r, c), s);
        }
    }
}
