//! Dataflow match (CodeBLEU §3.3): variables' "comes from" / "computed from" edges extracted
//! from the syntax tree, names normalised to `var_0, var_1, …` in order of appearance, and the
//! fraction of the reference's edges found in the candidate's (each candidate edge used once).
//!
//! The extraction ports codebleu 0.7.0's `DFG_python` and `DFG_rust` rule by rule, including
//! what they leave out (a Rust `function_item` contributes its parameters only) and their
//! `list(set(...))` merges, whose order comes from [`super::pyset`].

use rustc_hash::{FxHashMap as HashMap, FxHashSet};

use std::rc::Rc;

use tree_sitter::{Node, Point};

use super::Lang;
use super::pyset::list_set;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Rel {
    ComesFrom,
    ComputedFrom,
}

#[derive(Clone, Debug)]
struct Edge {
    code: Rc<str>,
    idx: usize,
    rel: Rel,
    names: Vec<Rc<str>>,
    idxs: Vec<usize>,
}

/// A normalised edge: (variable, relation, parents).
pub(crate) type NormEdge = (usize, Rel, Vec<usize>);

/// The extraction failed the way the Python code raises (a missing field): codebleu then uses
/// an empty dataflow for the whole snippet.
struct Abort;

type States = HashMap<Rc<str>, Vec<usize>>;
type Res = Result<(Vec<Edge>, States), Abort>;

struct Ctx<'s> {
    lang: Lang,
    index: HashMap<(Point, Point), (usize, Rc<str>)>,
    kind: &'s dyn Fn(&Node<'_>) -> &'static str,
}

fn children<'t>(node: &Node<'t>) -> Vec<Node<'t>> {
    let mut out = Vec::with_capacity(node.child_count());
    let mut c = node.walk();
    out.extend(node.children(&mut c));
    out
}

fn is_token_leaf(ctx: &Ctx<'_>, node: &Node<'_>) -> bool {
    let k = (ctx.kind)(node);
    (node.child_count() == 0 || matches!(k, "string_literal" | "string" | "character_literal"))
        && k != "comment"
}

fn token_index(ctx: &Ctx<'_>, node: &Node<'_>, out: &mut Vec<(Point, Point)>) {
    if is_token_leaf(ctx, node) {
        out.push((node.start_position(), node.end_position()));
    } else {
        let mut cursor = node.walk();
        for c in node.children(&mut cursor) {
            token_index(ctx, &c, out);
        }
    }
}

fn variable_index(
    ctx: &Ctx<'_>,
    node: Option<&Node<'_>>,
    out: &mut Vec<(Point, Point)>,
) -> Result<(), Abort> {
    let node = node.ok_or(Abort)?;
    if is_token_leaf(ctx, node) {
        let key = (node.start_position(), node.end_position());
        let (_, code) = ctx.index.get(&key).ok_or(Abort)?;
        if (ctx.kind)(node) != &**code {
            out.push(key);
        }
    } else {
        let mut cursor = node.walk();
        for c in node.children(&mut cursor) {
            variable_index(ctx, Some(&c), out)?;
        }
    }
    Ok(())
}

/// Python's `code[line][a:b]` on code points, with byte columns as tree-sitter gives them.
fn slice_chars(line: &str, a: usize, b: Option<usize>) -> &str {
    // Byte offset of code point `i` (the line's end when past it).
    let at = |i: usize| {
        if line.is_ascii() {
            i.min(line.len())
        } else {
            line.char_indices().nth(i).map_or(line.len(), |(o, _)| o)
        }
    };
    let a = at(a);
    let b = b.map_or(line.len(), at);
    if a >= b { "" } else { &line[a..b] }
}

fn index_to_code_token(lines: &[&str], (s, e): (Point, Point)) -> String {
    let get = |r: usize| lines.get(r).copied().unwrap_or("");
    if s.row == e.row {
        slice_chars(get(s.row), s.column, Some(e.column)).to_string()
    } else {
        let mut out = slice_chars(get(s.row), s.column, None).to_string();
        for r in s.row + 1..e.row {
            out.push_str(get(r));
        }
        out.push_str(slice_chars(get(e.row), 0, Some(e.column)));
        out
    }
}

fn sort_by_idx(mut dfg: Vec<Edge>) -> Vec<Edge> {
    dfg.sort_by_key(|e| e.idx);
    dfg
}

/// The `dic` merge of the loop rules: one edge per (code, idx, relation), names merged through
/// a Python set, indices sorted.
fn merge_loop(dfg: Vec<Edge>) -> Vec<Edge> {
    let mut order: Vec<(Rc<str>, usize, Rel)> = Vec::new();
    type Key = (Rc<str>, usize, Rel);
    let mut map: HashMap<Key, (Vec<Rc<str>>, Vec<usize>)> = HashMap::default();
    for e in dfg {
        let key = (e.code.clone(), e.idx, e.rel);
        match map.get_mut(&key) {
            None => {
                order.push(key.clone());
                map.insert(key, (e.names, e.idxs));
            }
            Some((names, idxs)) => {
                let mut all = std::mem::take(names);
                all.extend(e.names);
                *names = list_set(&all);
                idxs.extend(e.idxs);
                idxs.sort_unstable();
                idxs.dedup();
            }
        }
    }
    order.sort_by_key(|k| k.1);
    order
        .into_iter()
        .filter_map(|k| {
            let (names, idxs) = map.remove(&k)?;
            Some(Edge {
                code: k.0,
                idx: k.1,
                rel: k.2,
                names,
                idxs,
            })
        })
        .collect()
}

fn merge_states(others: Vec<States>) -> States {
    let mut new: States = HashMap::default();
    for dic in others {
        for (k, v) in dic {
            new.entry(k).or_default().extend(v);
        }
    }
    for v in new.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    new
}

fn leaf(ctx: &Ctx<'_>, node: &Node<'_>, mut states: States) -> Res {
    let (idx, code) = ctx
        .index
        .get(&(node.start_position(), node.end_position()))
        .ok_or(Abort)?;
    if (ctx.kind)(node) == &**code {
        return Ok((vec![], states));
    }
    let (idx, code) = (*idx, code.clone());
    if let Some(prev) = states.get(&code) {
        let idxs = prev.clone();
        return Ok((
            vec![Edge {
                code: code.clone(),
                idx,
                rel: Rel::ComesFrom,
                names: vec![code],
                idxs,
            }],
            states,
        ));
    }
    if (ctx.kind)(node) == "identifier" {
        states.insert(code.clone(), vec![idx]);
    }
    Ok((
        vec![Edge {
            code,
            idx,
            rel: Rel::ComesFrom,
            names: vec![],
            idxs: vec![],
        }],
        states,
    ))
}

fn vars(ctx: &Ctx<'_>, node: Option<&Node<'_>>) -> Result<Vec<(usize, Rc<str>)>, Abort> {
    let mut keys = Vec::new();
    variable_index(ctx, node, &mut keys)?;
    keys.iter()
        .map(|k| ctx.index.get(k).cloned().ok_or(Abort))
        .collect()
}

fn field<'t>(node: &Node<'t>, name: &str) -> Option<Node<'t>> {
    node.child_by_field_name(name)
}

fn python(ctx: &Ctx<'_>, node: Option<&Node<'_>>, states: States) -> Res {
    let node = node.ok_or(Abort)?;
    let kind = (ctx.kind)(node);
    if is_token_leaf(ctx, node) {
        return leaf(ctx, node, states);
    }
    let mut states = states;
    let mut dfg = Vec::new();
    match kind {
        "default_parameter" => {
            let name = field(node, "name");
            let value = field(node, "value");
            match value {
                None => {
                    for (idx, code) in vars(ctx, name.as_ref())? {
                        dfg.push(Edge {
                            code: code.clone(),
                            idx,
                            rel: Rel::ComesFrom,
                            names: vec![],
                            idxs: vec![],
                        });
                        states.insert(code, vec![idx]);
                    }
                }
                Some(value) => {
                    let names = vars(ctx, name.as_ref())?;
                    let values = vars(ctx, Some(&value))?;
                    let (t, s) = python(ctx, Some(&value), states)?;
                    dfg.extend(t);
                    states = s;
                    for (idx1, code1) in names {
                        for (idx2, code2) in &values {
                            dfg.push(Edge {
                                code: code1.clone(),
                                idx: idx1,
                                rel: Rel::ComesFrom,
                                names: vec![code2.clone()],
                                idxs: vec![*idx2],
                            });
                        }
                        states.insert(code1, vec![idx1]);
                    }
                }
            }
            Ok((sort_by_idx(dfg), states))
        }
        "assignment" | "augmented_assignment" | "for_in_clause" => {
            let (lefts, rights): (Vec<Option<Node<'_>>>, Vec<Option<Node<'_>>>) =
                if kind == "for_in_clause" {
                    (
                        vec![field(node, "left")],
                        vec![children(node).last().copied()],
                    )
                } else {
                    let Some(right) = field(node, "right") else {
                        return Ok((vec![], states));
                    };
                    let left = field(node, "left").ok_or(Abort)?;
                    pair_up(ctx, left, right)
                };
            for r in &rights {
                let (t, s) = python(ctx, r.as_ref(), states)?;
                dfg.extend(t);
                states = s;
            }
            computed_from(ctx, &lefts, &rights, &mut dfg, &mut states)?;
            Ok((sort_by_idx(dfg), states))
        }
        "if_statement" => {
            let mut current = states.clone();
            let mut others = Vec::new();
            let mut tag = kind.contains("else");
            for child in children(node) {
                let ck = (ctx.kind)(&child);
                if ck.contains("else") {
                    tag = true;
                }
                if ck != "elif_clause" && ck != "else_clause" {
                    let (t, s) = python(ctx, Some(&child), current)?;
                    dfg.extend(t);
                    current = s;
                } else {
                    let (t, s) = python(ctx, Some(&child), states.clone())?;
                    dfg.extend(t);
                    others.push(s);
                }
            }
            others.push(current);
            if !tag {
                others.push(states);
            }
            Ok((sort_by_idx(dfg), merge_states(others)))
        }
        "for_statement" => {
            for _ in 0..2 {
                let right = field(node, "right").ok_or(Abort)?;
                let left = field(node, "left").ok_or(Abort)?;
                let (lefts, rights) = pair_up(ctx, left, right);
                for r in &rights {
                    let (t, s) = python(ctx, r.as_ref(), states)?;
                    dfg.extend(t);
                    states = s;
                }
                computed_from(ctx, &lefts, &rights, &mut dfg, &mut states)?;
                if let Some(last) = children(node).last()
                    && (ctx.kind)(last) == "block"
                {
                    let (t, s) = python(ctx, Some(last), states)?;
                    dfg.extend(t);
                    states = s;
                }
            }
            Ok((sort_by_idx(merge_loop(dfg)), states))
        }
        "while_statement" => {
            for _ in 0..2 {
                for child in children(node) {
                    let (t, s) = python(ctx, Some(&child), states)?;
                    dfg.extend(t);
                    states = s;
                }
            }
            Ok((sort_by_idx(merge_loop(dfg)), states))
        }
        _ => {
            let kids = children(node);
            for first in [true, false] {
                for child in &kids {
                    if ((ctx.kind)(child) == "for_in_clause") == first {
                        let (t, s) = python(ctx, Some(child), states)?;
                        dfg.extend(t);
                        states = s;
                    }
                }
            }
            Ok((sort_by_idx(dfg), states))
        }
    }
}

/// The left/right pairing of Python's assignment and `for` rules.
fn pair_up<'t>(
    ctx: &Ctx<'_>,
    left: Node<'t>,
    right: Node<'t>,
) -> (Vec<Option<Node<'t>>>, Vec<Option<Node<'t>>>) {
    let not_comma = |n: &Node<'_>| (ctx.kind)(n) != ",";
    let mut lefts: Vec<Option<Node<'t>>> = children(&left)
        .into_iter()
        .filter(not_comma)
        .map(Some)
        .collect();
    let mut rights: Vec<Option<Node<'t>>> = children(&right)
        .into_iter()
        .filter(not_comma)
        .map(Some)
        .collect();
    if lefts.len() != rights.len() {
        lefts = vec![Some(left)];
        rights = vec![Some(right)];
    }
    if lefts.is_empty() {
        lefts = vec![Some(left)];
    }
    if rights.is_empty() {
        rights = vec![Some(right)];
    }
    (lefts, rights)
}

fn computed_from(
    ctx: &Ctx<'_>,
    lefts: &[Option<Node<'_>>],
    rights: &[Option<Node<'_>>],
    dfg: &mut Vec<Edge>,
    states: &mut States,
) -> Result<(), Abort> {
    for (l, r) in lefts.iter().zip(rights) {
        let ls = vars(ctx, l.as_ref())?;
        let rs = vars(ctx, r.as_ref())?;
        for (idx1, code1) in ls {
            dfg.push(Edge {
                code: code1.clone(),
                idx: idx1,
                rel: Rel::ComputedFrom,
                names: rs.iter().map(|x| x.1.clone()).collect(),
                idxs: rs.iter().map(|x| x.0).collect(),
            });
            states.insert(code1, vec![idx1]);
        }
    }
    Ok(())
}

fn rust(ctx: &Ctx<'_>, node: Option<&Node<'_>>, states: States) -> Res {
    let node = node.ok_or(Abort)?;
    let kind = (ctx.kind)(node);
    if is_token_leaf(ctx, node) {
        return leaf(ctx, node, states);
    }
    let mut states = states;
    let mut dfg = Vec::new();
    const IF: [&str; 4] = [
        "if_expression",
        "if_let_expression",
        "match_expression",
        "else",
    ];
    match kind {
        "function_item" => {
            let kids = children(node);
            let name = kids.get(1).copied();
            let value = kids.get(2).copied();
            match value {
                None => {
                    for (idx, code) in vars(ctx, name.as_ref())? {
                        dfg.push(Edge {
                            code: code.clone(),
                            idx,
                            rel: Rel::ComesFrom,
                            names: vec![],
                            idxs: vec![],
                        });
                        states.insert(code, vec![idx]);
                    }
                }
                Some(value) => {
                    let names = vars(ctx, name.as_ref())?;
                    let values = vars(ctx, Some(&value))?;
                    let (t, s) = rust(ctx, Some(&value), states)?;
                    dfg.extend(t);
                    states = s;
                    for (idx1, code1) in names {
                        for (idx2, code2) in &values {
                            dfg.push(Edge {
                                code: code1.clone(),
                                idx: idx1,
                                rel: Rel::ComesFrom,
                                names: vec![code2.clone()],
                                idxs: vec![*idx2],
                            });
                        }
                        states.insert(code1, vec![idx1]);
                    }
                }
            }
            Ok((sort_by_idx(dfg), states))
        }
        "assignment_expression" | "compound_assignment_expr" | "let_expression" => {
            let left = field(node, "left");
            let right = field(node, "right");
            let (t, s) = rust(ctx, right.as_ref(), states)?;
            dfg.extend(t);
            states = s;
            let names = vars(ctx, left.as_ref())?;
            let values = vars(ctx, right.as_ref())?;
            for (idx1, code1) in names {
                for (idx2, code2) in &values {
                    dfg.push(Edge {
                        code: code1.clone(),
                        idx: idx1,
                        rel: Rel::ComputedFrom,
                        names: vec![code2.clone()],
                        idxs: vec![*idx2],
                    });
                }
                states.insert(code1, vec![idx1]);
            }
            Ok((sort_by_idx(dfg), states))
        }
        k if IF.contains(&k) => {
            let mut current = states.clone();
            let mut others = Vec::new();
            let mut flag = false;
            let mut tag = k.contains("else");
            for child in children(node) {
                let ck = (ctx.kind)(&child);
                if ck.contains("else") {
                    tag = true;
                }
                if !IF.contains(&ck) && !flag {
                    let (t, s) = rust(ctx, Some(&child), current)?;
                    dfg.extend(t);
                    current = s;
                } else {
                    flag = true;
                    let (t, s) = rust(ctx, Some(&child), states.clone())?;
                    dfg.extend(t);
                    others.push(s);
                }
            }
            others.push(current);
            if !tag {
                others.push(states);
            }
            Ok((sort_by_idx(dfg), merge_states(others)))
        }
        "for_expression" => {
            for child in children(node) {
                let (t, s) = rust(ctx, Some(&child), states)?;
                dfg.extend(t);
                states = s;
            }
            Ok((sort_by_idx(merge_loop(dfg)), states))
        }
        "while_expression" | "while_let_expression" | "loop_expression" => {
            for _ in 0..2 {
                for child in children(node) {
                    let (t, s) = rust(ctx, Some(&child), states)?;
                    dfg.extend(t);
                    states = s;
                }
            }
            Ok((sort_by_idx(merge_loop(dfg)), states))
        }
        _ => {
            for child in children(node) {
                let (t, s) = rust(ctx, Some(&child), states)?;
                dfg.extend(t);
                states = s;
            }
            Ok((sort_by_idx(dfg), states))
        }
    }
}

/// `get_data_flow` followed by `normalize_dataflow`.
pub(crate) fn normalized_dataflow(
    lang: Lang,
    code: &str,
    root: Node<'_>,
    kind: &dyn Fn(&Node<'_>) -> &'static str,
) -> Vec<NormEdge> {
    let mut ctx = Ctx {
        lang,
        index: HashMap::default(),
        kind,
    };
    let mut keys = Vec::new();
    token_index(&ctx, &root, &mut keys);
    let lines: Vec<&str> = code.split('\n').collect();
    for (i, k) in keys.iter().enumerate() {
        let text = index_to_code_token(&lines, *k);
        ctx.index.insert(*k, (i, text.into()));
    }
    let result = match ctx.lang {
        Lang::Python => python(&ctx, Some(&root), States::default()),
        Lang::Rust => rust(&ctx, Some(&root), States::default()),
    };
    let dfg = match result {
        Ok((d, _)) => sort_by_idx(d),
        Err(Abort) => Vec::new(),
    };
    // Keep edges that touch another edge, then merge edges of the same token.
    let mut used = FxHashSet::default();
    for d in &dfg {
        if !d.idxs.is_empty() {
            used.insert(d.idx);
        }
        used.extend(d.idxs.iter().copied());
    }
    let mut order: Vec<usize> = Vec::new();
    let mut by_idx: HashMap<usize, Edge> = HashMap::default();
    for d in dfg.into_iter().filter(|d| used.contains(&d.idx)) {
        match by_idx.get_mut(&d.idx) {
            None => {
                order.push(d.idx);
                by_idx.insert(d.idx, d);
            }
            Some(prev) => {
                let mut names = std::mem::take(&mut prev.names);
                names.extend(d.names);
                prev.names = list_set(&names);
                prev.code = d.code;
                prev.rel = d.rel;
            }
        }
    }
    // normalize_dataflow
    let mut var: HashMap<Rc<str>, usize> = HashMap::default();
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        let Some(e) = by_idx.remove(&i) else { continue };
        for n in &e.names {
            let next = var.len();
            var.entry(n.clone()).or_insert(next);
        }
        let next = var.len();
        let v = *var.entry(e.code.clone()).or_insert(next);
        let parents = e
            .names
            .iter()
            .map(|n| var.get(n).copied().unwrap_or(0))
            .collect();
        out.push((v, e.rel, parents));
    }
    out
}

/// Matched and total reference edges: each reference edge consumes one equal candidate edge.
pub(crate) fn match_counts(reference: &[NormEdge], candidate: &[NormEdge]) -> (usize, usize) {
    let mut cand: Vec<Option<&NormEdge>> = candidate.iter().map(Some).collect();
    let mut matched = 0;
    for r in reference {
        if let Some(slot) = cand.iter_mut().find(|c| c.is_some_and(|c| c == r)) {
            *slot = None;
            matched += 1;
        }
    }
    (matched, reference.len())
}
