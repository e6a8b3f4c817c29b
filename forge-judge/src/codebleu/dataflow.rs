//! Dataflow match (CodeBLEU §3.3): variables' "comes from" / "computed from" edges extracted
//! from the syntax tree, names normalised to `var_0, var_1, …` in order of appearance, and the
//! fraction of the reference's edges found in the candidate's (each candidate edge used once).
//!
//! The extraction ports codebleu 0.7.0's `DFG_python` and `DFG_rust` rule by rule, including
//! what they leave out (a Rust `function_item` contributes its parameters only) and their
//! `list(set(...))` merges, whose order comes from [`super::pyset`]. It runs on the flattened
//! tree ([`super::tree`]) with token texts numbered once; the rules append to one edge list
//! instead of returning a sorted list per node: every rule's `sorted(..., key=idx)` is stable,
//! so sorting once at the end gives the same order, and the loop rules' merges, which depend on
//! the order among equal indices only, see the same order either way.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use smallvec::{SmallVec, smallvec};

use super::Lang;
use super::grammar::{Fields, Grammar};
use super::pyset::{list_set_hashed, py_str_hash};
use super::tree::{Flat, NONE};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Rel {
    ComesFrom,
    ComputedFrom,
}

/// An edge: token `idx` (text number `code`) comes from / is computed from the tokens `idxs`
/// (text numbers `names`).
#[derive(Clone, Debug)]
struct Edge {
    code: u32,
    idx: u32,
    rel: Rel,
    names: Ids,
    idxs: Ids,
}

/// Text numbers or token indices of an edge: mostly none or one.
type Ids = SmallVec<[u32; 2]>;

/// A normalised edge: (variable, relation, parents).
pub(crate) type NormEdge = (usize, Rel, Vec<usize>);

/// The extraction failed the way the Python code raises (a missing field): codebleu then uses
/// an empty dataflow for the whole snippet.
struct Abort;

type Res = Result<(), Abort>;

/// Text number of a token whose text is its node's type (and no other leaf's).
const SAME: u32 = NONE - 1;

/// Variable states: for each text number, the token indices it last came from (empty: none).
#[derive(Clone, Default)]
struct States(Vec<Option<Rc<[u32]>>>);

impl States {
    fn get(&self, name: u32) -> Option<&Rc<[u32]>> {
        self.0.get(name as usize)?.as_ref()
    }

    fn insert(&mut self, name: u32, idxs: Rc<[u32]>) {
        let i = name as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i] = Some(idxs);
    }

    /// The rules' `new_states`: every name of any of `all`, with the sorted union of its
    /// indices.
    fn merge(all: Vec<States>) -> States {
        let len = all.iter().map(|s| s.0.len()).max().unwrap_or(0);
        let mut out = States(vec![None; len]);
        let mut buf: Vec<u32> = Vec::new();
        for (name, slot) in out.0.iter_mut().enumerate() {
            buf.clear();
            let mut single: Option<&Rc<[u32]>> = None;
            let mut sources = 0;
            for s in &all {
                if let Some(Some(v)) = s.0.get(name) {
                    sources += 1;
                    single = Some(v);
                    buf.extend_from_slice(v);
                }
            }
            if sources == 0 {
                continue;
            }
            buf.sort_unstable();
            buf.dedup();
            *slot = match single {
                Some(v) if sources == 1 && **v == *buf => Some(v.clone()),
                _ => Some(buf.as_slice().into()),
            };
        }
        out
    }
}

struct Ctx<'f, 'c> {
    flat: &'f Flat,
    fields: Fields,
    /// Per node: its token index (codebleu's `index_to_code[(start, end)][0]`) or [`NONE`].
    tok: Vec<u32>,
    /// Per token index: its text number.
    tok_text: Vec<u32>,
    /// Text by number.
    texts: Vec<Cow<'c, str>>,
    /// CPython `hash` of each text, computed when first needed.
    hashes: Vec<Cell<Option<i64>>>,
}

impl Ctx<'_, '_> {
    fn kind(&self, i: u32) -> &'static str {
        self.flat.node(i).kind
    }

    fn is_token_leaf(&self, i: u32) -> bool {
        let k = self.kind(i);
        (self.flat.children(i).is_empty()
            || matches!(k, "string_literal" | "string" | "character_literal"))
            && k != "comment"
    }

    /// The token (index, text number) of token leaf `i`, if its text differs from its type.
    fn token(&self, i: u32) -> Result<Option<(u32, u32)>, Abort> {
        let t = self.tok[i as usize];
        if t == NONE {
            return Err(Abort);
        }
        let code = self.tok_text[t as usize];
        Ok((code != SAME && self.kind(i) != self.texts[code as usize]).then_some((t, code)))
    }

    fn field(&self, i: u32, field: u16) -> Option<u32> {
        self.flat.field(i, field)
    }

    fn children(&self, i: u32) -> &[u32] {
        self.flat.children(i)
    }

    /// `tree_to_variable_index` mapped through `index_to_code`: (index, text number) of the
    /// tokens under `i` whose text is not their type.
    fn vars(&self, i: Option<u32>) -> Result<Vec<(u32, u32)>, Abort> {
        let mut out = Vec::new();
        self.vars_into(i.ok_or(Abort)?, &mut out)?;
        Ok(out)
    }

    fn vars_into(&self, i: u32, out: &mut Vec<(u32, u32)>) -> Res {
        if self.is_token_leaf(i) {
            if let Some(t) = self.token(i)? {
                out.push(t);
            }
        } else {
            for &c in self.children(i) {
                self.vars_into(c, out)?;
            }
        }
        Ok(())
    }

    fn leaf(&self, i: u32, states: &mut States, out: &mut Vec<Edge>) -> Res {
        let Some((idx, code)) = self.token(i)? else {
            return Ok(());
        };
        if let Some(prev) = states.get(code) {
            out.push(Edge {
                code,
                idx,
                rel: Rel::ComesFrom,
                names: smallvec![code],
                idxs: SmallVec::from_slice(prev),
            });
            return Ok(());
        }
        if self.kind(i) == "identifier" {
            states.insert(code, Rc::from([idx]));
        }
        out.push(Edge {
            code,
            idx,
            rel: Rel::ComesFrom,
            names: Ids::new(),
            idxs: Ids::new(),
        });
        Ok(())
    }

    /// `list(set(names))` in CPython's order, on text numbers (equal numbers: equal texts).
    fn list_set(&self, names: &[u32]) -> Ids {
        match names {
            [] => Ids::new(),
            [first, rest @ ..] if rest.iter().all(|n| n == first) => smallvec![*first],
            _ => {
                let hash = |n: u32| {
                    let cell = &self.hashes[n as usize];
                    cell.get().unwrap_or_else(|| {
                        let h = py_str_hash(&self.texts[n as usize]);
                        cell.set(Some(h));
                        h
                    })
                };
                list_set_hashed(names.len(), |i| hash(names[i]), |a, b| names[a] == names[b])
                    .into_iter()
                    .map(|i| names[i])
                    .collect()
            }
        }
    }

    /// The `dic` merge of the loop rules on `out[start..]`: one edge per (code, idx,
    /// relation), names merged through a Python set, indices sorted; in order of index, then
    /// of first occurrence.
    fn merge_loop(&self, out: &mut Vec<Edge>, start: usize) {
        type Key = (u32, u32, Rel);
        let mut order: Vec<Key> = Vec::new();
        let mut map: FxHashMap<Key, (Ids, Ids)> = FxHashMap::default();
        for e in out.drain(start..) {
            let key = (e.code, e.idx, e.rel);
            match map.get_mut(&key) {
                None => {
                    order.push(key);
                    map.insert(key, (e.names, e.idxs));
                }
                Some((names, idxs)) => {
                    names.extend(e.names);
                    *names = self.list_set(names);
                    idxs.extend(e.idxs);
                    idxs.sort_unstable();
                    idxs.dedup();
                }
            }
        }
        order.sort_by_key(|k| k.1);
        out.extend(order.into_iter().filter_map(|k| {
            let (names, idxs) = map.remove(&k)?;
            Some(Edge {
                code: k.0,
                idx: k.1,
                rel: k.2,
                names,
                idxs,
            })
        }))
    }

    /// `default_parameter` (Python) and `function_item` (Rust): the name comes from the value.
    fn name_value(
        &self,
        name: Option<u32>,
        value: Option<u32>,
        states: &mut States,
        out: &mut Vec<Edge>,
        recurse: fn(&Self, Option<u32>, &mut States, &mut Vec<Edge>) -> Res,
    ) -> Res {
        match value {
            None => {
                for (idx, code) in self.vars(name)? {
                    out.push(Edge {
                        code,
                        idx,
                        rel: Rel::ComesFrom,
                        names: Ids::new(),
                        idxs: Ids::new(),
                    });
                    states.insert(code, Rc::from([idx]));
                }
            }
            Some(value) => {
                let names = self.vars(name)?;
                let values = self.vars(Some(value))?;
                recurse(self, Some(value), states, out)?;
                for (idx1, code1) in names {
                    for &(idx2, code2) in &values {
                        out.push(Edge {
                            code: code1,
                            idx: idx1,
                            rel: Rel::ComesFrom,
                            names: smallvec![code2],
                            idxs: smallvec![idx2],
                        });
                    }
                    states.insert(code1, Rc::from([idx1]));
                }
            }
        }
        Ok(())
    }

    fn python(&self, node: Option<u32>, states: &mut States, out: &mut Vec<Edge>) -> Res {
        let node = node.ok_or(Abort)?;
        if self.is_token_leaf(node) {
            return self.leaf(node, states, out);
        }
        let kind = self.kind(node);
        let f = self.fields;
        match kind {
            "default_parameter" => self.name_value(
                self.field(node, f.name),
                self.field(node, f.value),
                states,
                out,
                Self::python,
            ),
            "assignment" | "augmented_assignment" | "for_in_clause" => {
                let (lefts, rights) = if kind == "for_in_clause" {
                    (
                        vec![self.field(node, f.left)],
                        vec![self.children(node).last().copied()],
                    )
                } else {
                    let Some(right) = self.field(node, f.right) else {
                        return Ok(());
                    };
                    let left = self.field(node, f.left).ok_or(Abort)?;
                    self.pair_up(left, right)
                };
                for &r in &rights {
                    self.python(r, states, out)?;
                }
                self.computed_from(&lefts, &rights, states, out)
            }
            "if_statement" => {
                let mut current = states.clone();
                let mut others = Vec::new();
                let mut tag = false;
                for &child in self.children(node) {
                    let ck = self.kind(child);
                    if ck.contains("else") {
                        tag = true;
                    }
                    if ck != "elif_clause" && ck != "else_clause" {
                        self.python(Some(child), &mut current, out)?;
                    } else {
                        let mut s = states.clone();
                        self.python(Some(child), &mut s, out)?;
                        others.push(s);
                    }
                }
                others.push(current);
                if !tag {
                    others.push(std::mem::take(states));
                }
                *states = States::merge(others);
                Ok(())
            }
            "for_statement" => {
                let start = out.len();
                for _ in 0..2 {
                    let right = self.field(node, f.right).ok_or(Abort)?;
                    let left = self.field(node, f.left).ok_or(Abort)?;
                    let (lefts, rights) = self.pair_up(left, right);
                    for &r in &rights {
                        self.python(r, states, out)?;
                    }
                    self.computed_from(&lefts, &rights, states, out)?;
                    if let Some(&last) = self.children(node).last()
                        && self.kind(last) == "block"
                    {
                        self.python(Some(last), states, out)?;
                    }
                }
                self.merge_loop(out, start);
                Ok(())
            }
            "while_statement" => {
                let start = out.len();
                for _ in 0..2 {
                    for &child in self.children(node) {
                        self.python(Some(child), states, out)?;
                    }
                }
                self.merge_loop(out, start);
                Ok(())
            }
            _ => {
                let kids = self.children(node);
                for first in [true, false] {
                    for &child in kids {
                        if (self.kind(child) == "for_in_clause") == first {
                            self.python(Some(child), states, out)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The left/right pairing of Python's assignment and `for` rules.
    #[allow(clippy::type_complexity)]
    fn pair_up(&self, left: u32, right: u32) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        let split = |n: u32| -> Vec<Option<u32>> {
            self.children(n)
                .iter()
                .copied()
                .filter(|&c| self.kind(c) != ",")
                .map(Some)
                .collect()
        };
        let mut lefts = split(left);
        let mut rights = split(right);
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
        &self,
        lefts: &[Option<u32>],
        rights: &[Option<u32>],
        states: &mut States,
        out: &mut Vec<Edge>,
    ) -> Res {
        for (&l, &r) in lefts.iter().zip(rights) {
            let ls = self.vars(l)?;
            let rs = self.vars(r)?;
            for (idx1, code1) in ls {
                out.push(Edge {
                    code: code1,
                    idx: idx1,
                    rel: Rel::ComputedFrom,
                    names: rs.iter().map(|x| x.1).collect(),
                    idxs: rs.iter().map(|x| x.0).collect(),
                });
                states.insert(code1, Rc::from([idx1]));
            }
        }
        Ok(())
    }

    fn rust(&self, node: Option<u32>, states: &mut States, out: &mut Vec<Edge>) -> Res {
        const IF: [&str; 4] = [
            "if_expression",
            "if_let_expression",
            "match_expression",
            "else",
        ];
        let node = node.ok_or(Abort)?;
        if self.is_token_leaf(node) {
            return self.leaf(node, states, out);
        }
        let kind = self.kind(node);
        let f = self.fields;
        match kind {
            "function_item" => {
                let kids = self.children(node);
                self.name_value(
                    kids.get(1).copied(),
                    kids.get(2).copied(),
                    states,
                    out,
                    Self::rust,
                )
            }
            "assignment_expression" | "compound_assignment_expr" | "let_expression" => {
                let left = self.field(node, f.left);
                let right = self.field(node, f.right);
                self.rust(right, states, out)?;
                let names = self.vars(left)?;
                let values = self.vars(right)?;
                for (idx1, code1) in names {
                    for &(idx2, code2) in &values {
                        out.push(Edge {
                            code: code1,
                            idx: idx1,
                            rel: Rel::ComputedFrom,
                            names: smallvec![code2],
                            idxs: smallvec![idx2],
                        });
                    }
                    states.insert(code1, Rc::from([idx1]));
                }
                Ok(())
            }
            k if IF.contains(&k) => {
                let mut current = states.clone();
                let mut others = Vec::new();
                let mut flag = false;
                let mut tag = k.contains("else");
                for &child in self.children(node) {
                    let ck = self.kind(child);
                    if ck.contains("else") {
                        tag = true;
                    }
                    if !IF.contains(&ck) && !flag {
                        self.rust(Some(child), &mut current, out)?;
                    } else {
                        flag = true;
                        let mut s = states.clone();
                        self.rust(Some(child), &mut s, out)?;
                        others.push(s);
                    }
                }
                others.push(current);
                if !tag {
                    others.push(std::mem::take(states));
                }
                *states = States::merge(others);
                Ok(())
            }
            "for_expression" => {
                let start = out.len();
                for &child in self.children(node) {
                    self.rust(Some(child), states, out)?;
                }
                self.merge_loop(out, start);
                Ok(())
            }
            "while_expression" | "while_let_expression" | "loop_expression" => {
                let start = out.len();
                for _ in 0..2 {
                    for &child in self.children(node) {
                        self.rust(Some(child), states, out)?;
                    }
                }
                self.merge_loop(out, start);
                Ok(())
            }
            _ => {
                for &child in self.children(node) {
                    self.rust(Some(child), states, out)?;
                }
                Ok(())
            }
        }
    }
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

/// codebleu's `index_to_code_token`.
fn index_to_code_token<'c>(lines: &[&'c str], s: (u32, u32), e: (u32, u32)) -> Cow<'c, str> {
    let get = |r: u32| lines.get(r as usize).copied().unwrap_or("");
    if s.0 == e.0 {
        Cow::Borrowed(slice_chars(get(s.0), s.1 as usize, Some(e.1 as usize)))
    } else {
        let mut out = slice_chars(get(s.0), s.1 as usize, None).to_string();
        for r in s.0 + 1..e.0 {
            out.push_str(get(r));
        }
        out.push_str(slice_chars(get(e.0), 0, Some(e.1 as usize)));
        Cow::Owned(out)
    }
}

/// `get_data_flow` followed by `normalize_dataflow`.
pub(crate) fn normalized_dataflow(
    g: &Grammar,
    lang: Lang,
    code: &str,
    flat: &Flat,
) -> Vec<NormEdge> {
    let mut ctx = Ctx {
        flat,
        fields: g.fields(),
        tok: vec![NONE; flat.nodes.len()],
        tok_text: Vec::new(),
        texts: Vec::new(),
        hashes: Vec::new(),
    };
    // tree_to_token_index: the token leaves in order, not below another token leaf.
    let mut leaves = Vec::new();
    let mut stack = vec![0u32];
    while let Some(i) = stack.pop() {
        if ctx.is_token_leaf(i) {
            leaves.push(i);
        } else {
            stack.extend(ctx.children(i).iter().rev());
        }
    }
    // index_to_code: keyed by position, so of several tokens with one (start, end) the last
    // one's index stands for all. Leaves are in document order (starts never decrease), so
    // such tokens share a run of equal starts. Only these leaves are ever looked up: the
    // rules stop at token leaves, so never reach the nodes below one.
    let mut shared = vec![false; leaves.len()];
    let mut run = 0;
    for (t, &i) in leaves.iter().enumerate() {
        let n = flat.node(i);
        if flat.node(leaves[run]).start != n.start {
            run = t;
        }
        ctx.tok[i as usize] = t as u32;
        for &j in &leaves[run..t] {
            if flat.node(j).end == n.end {
                ctx.tok[j as usize] = t as u32;
                shared[t] = true;
            }
        }
    }
    // Texts numbered, except those of tokens whose text is their type (punctuation,
    // keywords) and that no other leaf shares: those never enter the dataflow.
    let lines: Vec<&str> = code.split('\n').collect();
    let mut numbers: FxHashMap<Cow<'_, str>, u32> = FxHashMap::default();
    for (t, &i) in leaves.iter().enumerate() {
        let n = flat.node(i);
        let text = index_to_code_token(&lines, n.start, n.end);
        if !shared[t] && text == n.kind {
            ctx.tok_text.push(SAME);
            continue;
        }
        let next = ctx.texts.len() as u32;
        let id = *numbers.entry(text.clone()).or_insert(next);
        if id == next {
            ctx.texts.push(text);
        }
        ctx.tok_text.push(id);
    }
    ctx.hashes = vec![Cell::new(None); ctx.texts.len()];
    let mut dfg = Vec::new();
    let mut states = States::default();
    let result = match lang {
        Lang::Python => ctx.python(Some(0), &mut states, &mut dfg),
        Lang::Rust => ctx.rust(Some(0), &mut states, &mut dfg),
    };
    if result.is_err() {
        dfg.clear();
    }
    dfg.sort_by_key(|e| e.idx);
    // Keep edges that touch another edge, then merge edges of the same token (adjacent once
    // sorted by token index).
    let mut used = vec![false; ctx.tok_text.len()];
    for d in &dfg {
        if !d.idxs.is_empty() {
            used[d.idx as usize] = true;
        }
        for &i in &d.idxs {
            used[i as usize] = true;
        }
    }
    let mut merged: Vec<Edge> = Vec::new();
    for d in dfg.into_iter().filter(|d| used[d.idx as usize]) {
        match merged.last_mut() {
            Some(prev) if prev.idx == d.idx => {
                prev.names.extend(d.names);
                prev.names = ctx.list_set(&prev.names);
                prev.code = d.code;
                prev.rel = d.rel;
            }
            _ => merged.push(d),
        }
    }
    // normalize_dataflow: names numbered in order of first appearance.
    let mut var = vec![NONE; ctx.texts.len()];
    let mut vars = 0;
    let mut number = |n: u32| {
        let v = &mut var[n as usize];
        if *v == NONE {
            *v = vars;
            vars += 1;
        }
        *v as usize
    };
    merged
        .into_iter()
        .map(|e| {
            let parents: Vec<usize> = e.names.iter().map(|&n| number(n)).collect();
            (number(e.code), e.rel, parents)
        })
        .collect()
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
