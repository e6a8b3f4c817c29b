//! Comment and docstring removal before the syntax and dataflow matches, as codebleu does it.
//!
//! Python: codebleu regenerates the source from Python 3.11's `tokenize` stream, dropping
//! comments and every string token whose previous token is `INDENT` or `NEWLINE` or that
//! starts in column 0 ("docstrings"), then drops blank lines; when `tokenize` raises (EOF in a
//! multi-line string or statement, inconsistent dedent) the source is used unchanged. The
//! tokenizer below reproduces the parts of `tokenize.generate_tokens` that decide those
//! outcomes. Rust: one regex pass replacing `//…` and `/*…*/` by a space while skipping over
//! quoted strings (a lifetime `'a` opens a "string" up to the next `'`, as in the original).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Comment,
    String,
    Newline,
    Indent,
    Other,
}

struct Tok {
    kind: Kind,
    text: Text,
    start: (usize, usize),
    end: (usize, usize),
}

/// A token's text: characters `a..b` of line `line` (0-based), or text of its own (strings
/// continued over lines).
enum Text {
    Span(usize, usize, usize),
    Owned(String),
}

struct Raise;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Length of a string prefix (`r`, `b`, `f`, `u`, `rb`, `br`, `fr`, `rf`, any case) at `i`
/// when a quote follows it.
fn string_prefix(line: &[char], i: usize) -> Option<usize> {
    let lower = |k: usize| line.get(i + k).map(|c| c.to_ascii_lowercase());
    let quote = |k: usize| matches!(line.get(i + k), Some('\'' | '"'));
    if quote(0) {
        return Some(0);
    }
    let one = matches!(lower(0), Some('r' | 'b' | 'f' | 'u'));
    if one && quote(1) {
        return Some(1);
    }
    let two = matches!(
        (lower(0), lower(1)),
        (Some('r'), Some('b' | 'f')) | (Some('b' | 'f'), Some('r'))
    );
    if two && quote(2) {
        return Some(2);
    }
    None
}

/// Scan a triple-quoted body from `pos` for the closing `q q q`; returns the index after it.
fn find_triple_end(line: &[char], mut pos: usize, q: char) -> Option<usize> {
    while pos < line.len() {
        if line[pos] == '\\' {
            pos += 2;
            continue;
        }
        if line[pos] == q && line.get(pos + 1) == Some(&q) && line.get(pos + 2) == Some(&q) {
            return Some(pos + 3);
        }
        pos += 1;
    }
    None
}

/// Scan a single-quoted body from `pos` (after the opening quote). `Ok(end)` after the closing
/// quote; `Err(true)` when the line ends in backslash-newline inside it; `Err(false)` when not
/// terminated.
fn find_single_end(line: &[char], mut pos: usize, q: char) -> Result<usize, bool> {
    while pos < line.len() {
        match line[pos] {
            '\\' => {
                if line.get(pos + 1) == Some(&'\n')
                    || (line.get(pos + 1) == Some(&'\r') && line.get(pos + 2) == Some(&'\n'))
                {
                    return Err(true);
                }
                pos += 2;
            }
            '\n' => return Err(false),
            c if c == q => return Ok(pos + 1),
            _ => pos += 1,
        }
    }
    Err(false)
}

/// Continuation of a single-quoted string on a later line (pattern without the newline ban).
fn find_single_cont(line: &[char], q: char) -> Option<usize> {
    let mut pos = 0;
    while pos < line.len() {
        match line[pos] {
            '\\' => pos += 2,
            c if c == q => return Some(pos + 1),
            _ => pos += 1,
        }
    }
    None
}

fn tokenize(lines: &[Vec<char>]) -> Result<Vec<Tok>, Raise> {
    let mut toks = Vec::new();
    let mut indents = vec![0usize];
    let mut parenlev: i64 = 0;
    let mut continued = false;
    // Continued string: (text so far, start, quote char, triple, needcont).
    type ContStr = (String, (usize, usize), char, bool, bool);
    let mut contstr: Option<ContStr> = None;
    let mut lnum = 0;
    let empty: Vec<char> = Vec::new();
    loop {
        let line = lines.get(lnum).unwrap_or(&empty);
        lnum += 1;
        let max = line.len();
        let mut pos = 0;
        if let Some((mut text, strstart, q, triple, needcont)) = contstr.take() {
            if line.is_empty() {
                return Err(Raise);
            }
            let end = if triple {
                find_triple_end(line, 0, q)
            } else {
                find_single_cont(line, q)
            };
            if let Some(end) = end {
                text.extend(&line[..end]);
                toks.push(Tok {
                    kind: Kind::String,
                    text: Text::Owned(text),
                    start: strstart,
                    end: (lnum, end),
                });
                pos = end;
            } else if needcont
                && !line.ends_with(&['\\', '\n'])
                && !line.ends_with(&['\\', '\r', '\n'])
            {
                text.extend(line.iter());
                toks.push(Tok {
                    kind: Kind::Other,
                    text: Text::Owned(text),
                    start: strstart,
                    end: (lnum, max),
                });
                continue;
            } else {
                text.extend(line.iter());
                contstr = Some((text, strstart, q, triple, needcont));
                continue;
            }
        } else if parenlev == 0 && !continued {
            if line.is_empty() {
                break;
            }
            let mut column = 0;
            while pos < max {
                match line[pos] {
                    ' ' => column += 1,
                    '\t' => column = (column / 8 + 1) * 8,
                    '\x0c' => column = 0,
                    _ => break,
                }
                pos += 1;
            }
            if pos == max {
                break;
            }
            if matches!(line[pos], '#' | '\r' | '\n') {
                if line[pos] == '#' {
                    let mut end = max;
                    while end > pos && matches!(line[end - 1], '\r' | '\n') {
                        end -= 1;
                    }
                    toks.push(Tok {
                        kind: Kind::Comment,
                        text: Text::Span(lnum - 1, pos, end),
                        start: (lnum, pos),
                        end: (lnum, end),
                    });
                    pos = end;
                }
                toks.push(Tok {
                    kind: Kind::Other,
                    text: Text::Span(lnum - 1, pos, max),
                    start: (lnum, pos),
                    end: (lnum, max),
                });
                continue;
            }
            if column > *indents.last().unwrap_or(&0) {
                indents.push(column);
                toks.push(Tok {
                    kind: Kind::Indent,
                    text: Text::Span(lnum - 1, 0, pos),
                    start: (lnum, 0),
                    end: (lnum, pos),
                });
            }
            while column < *indents.last().unwrap_or(&0) {
                if !indents.contains(&column) {
                    return Err(Raise);
                }
                indents.pop();
                toks.push(Tok {
                    kind: Kind::Other,
                    text: Text::Span(lnum - 1, pos, pos),
                    start: (lnum, pos),
                    end: (lnum, pos),
                });
            }
        } else {
            if line.is_empty() {
                return Err(Raise);
            }
            continued = false;
        }
        while pos < max {
            // Whitespace before the pseudo-token.
            let mut start = pos;
            while start < max && matches!(line[start], ' ' | '\x0c' | '\t') {
                start += 1;
            }
            if start == max {
                break;
            }
            let c = line[start];
            let tok = |kind, end: usize| Tok {
                kind,
                text: Text::Span(lnum - 1, start, end),
                start: (lnum, start),
                end: (lnum, end),
            };
            if c == '\\'
                && (line.get(start + 1) == Some(&'\n')
                    || (line.get(start + 1) == Some(&'\r') && line.get(start + 2) == Some(&'\n')))
            {
                continued = true;
                pos = max;
                continue;
            }
            if c == '#' {
                let mut end = max;
                while end > start && matches!(line[end - 1], '\r' | '\n') {
                    end -= 1;
                }
                toks.push(tok(Kind::Comment, end));
                pos = end;
                continue;
            }
            if let Some(pl) = string_prefix(line, start) {
                let q = line[start + pl];
                let body = start + pl + 1;
                if line.get(body) == Some(&q) && line.get(body + 1) == Some(&q) {
                    match find_triple_end(line, body + 2, q) {
                        Some(end) => {
                            toks.push(tok(Kind::String, end));
                            pos = end;
                        }
                        None => {
                            contstr = Some((
                                line[start..].iter().collect(),
                                (lnum, start),
                                q,
                                true,
                                false,
                            ));
                            pos = max;
                        }
                    }
                    continue;
                }
                match find_single_end(line, body, q) {
                    Ok(end) => {
                        toks.push(tok(Kind::String, end));
                        pos = end;
                        continue;
                    }
                    Err(true) => {
                        contstr = Some((
                            line[start..].iter().collect(),
                            (lnum, start),
                            q,
                            false,
                            true,
                        ));
                        pos = max;
                        continue;
                    }
                    Err(false) if pl > 0 => {
                        // The prefix letters are a name; the quote becomes an error token later.
                        toks.push(tok(Kind::Other, start + pl));
                        pos = start + pl;
                        continue;
                    }
                    Err(false) => {
                        // No pseudo-token matches: ERRORTOKEN of the character at `pos`.
                        toks.push(Tok {
                            kind: Kind::Other,
                            text: Text::Span(lnum - 1, pos, pos + 1),
                            start: (lnum, pos),
                            end: (lnum, pos + 1),
                        });
                        pos += 1;
                        continue;
                    }
                }
            }
            if c == '\n' || (c == '\r' && line.get(start + 1) == Some(&'\n')) {
                let kind = if parenlev > 0 {
                    Kind::Other
                } else {
                    Kind::Newline
                };
                toks.push(tok(kind, max));
                pos = max;
                continue;
            }
            if c.is_ascii_digit()
                || (c == '.' && line.get(start + 1).is_some_and(|d| d.is_ascii_digit()))
            {
                let mut end = start + 1;
                while end < max {
                    let d = line[end];
                    let exp_sign = matches!(d, '+' | '-')
                        && matches!(line[end - 1], 'e' | 'E')
                        && !line[start..end].iter().any(|x| matches!(x, 'x' | 'X'));
                    if is_word(d) || d == '.' || exp_sign {
                        end += 1;
                    } else {
                        break;
                    }
                }
                toks.push(tok(Kind::Other, end));
                pos = end;
                continue;
            }
            if is_word(c) {
                let mut end = start + 1;
                while end < max && is_word(line[end]) {
                    end += 1;
                }
                toks.push(tok(Kind::Other, end));
                pos = end;
                continue;
            }
            match c {
                '(' | '[' | '{' => parenlev += 1,
                ')' | ']' | '}' => parenlev -= 1,
                _ => {}
            }
            toks.push(tok(Kind::Other, start + 1));
            pos = start + 1;
        }
    }
    if contstr.is_some() {
        return Err(Raise);
    }
    Ok(toks)
}

/// `remove_comments_and_docstrings(source, "python")` of codebleu.
pub(crate) fn strip_python(source: &str) -> String {
    let lines: Vec<Vec<char>> = source
        .split_inclusive('\n')
        .map(|l| l.chars().collect())
        .collect();
    let Ok(toks) = tokenize(&lines) else {
        return source.to_string();
    };
    let push = |out: &mut String, text: &Text| match text {
        Text::Span(l, a, b) => out.extend(&lines[*l][*a..*b]),
        Text::Owned(t) => out.push_str(t),
    };
    let mut out = String::with_capacity(source.len());
    let mut prev = Kind::Indent;
    let mut last_line = 0usize; // lines are 1-based; 0 = before the first
    let mut last_col = 0usize;
    for t in toks {
        let (sl, sc) = t.start;
        if sl > last_line {
            last_col = 0;
        }
        if sc > last_col {
            out.extend(std::iter::repeat_n(' ', sc - last_col));
        }
        match t.kind {
            Kind::Comment => {}
            Kind::String => {
                if prev != Kind::Indent && prev != Kind::Newline && sc > 0 {
                    push(&mut out, &t.text);
                }
            }
            _ => push(&mut out, &t.text),
        }
        prev = t.kind;
        last_col = t.end.1;
        last_line = t.end.0;
    }
    drop_blank_lines(&out)
}

fn drop_blank_lines(s: &str) -> String {
    let kept: Vec<&str> = s
        .split('\n')
        .filter(|l| !super::py_strip(l).is_empty())
        .collect();
    kept.join("\n")
}

/// `remove_comments_and_docstrings(source, "rust")` of codebleu (the C-family regex). Every
/// character the pattern looks at is ASCII, so it runs on the UTF-8 bytes and copies the text
/// between matches whole.
pub(crate) fn strip_c_like(source: &str) -> String {
    let s = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    // Text before `i` not yet copied starts at `copied`.
    let mut copied = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'/' && s.get(i + 1) == Some(&b'/') {
            let j = s[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(s.len(), |p| i + p);
            out.push_str(&source[copied..i]);
            out.push(' ');
            i = j;
            copied = j;
            continue;
        }
        if c == b'/' && s.get(i + 1) == Some(&b'*') {
            let end = s
                .get(i + 2..)
                .and_then(|rest| rest.windows(2).position(|w| w == b"*/"))
                .map(|p| i + 2 + p + 2);
            if let Some(end) = end {
                out.push_str(&source[copied..i]);
                out.push(' ');
                i = end;
                copied = end;
                continue;
            }
        }
        if c == b'\'' || c == b'"' {
            let mut j = i + 1;
            let mut end = None;
            while j < s.len() {
                if s[j] == b'\\' {
                    if j + 1 < s.len() {
                        j += 2;
                        continue;
                    }
                    break;
                }
                if s[j] == c {
                    end = Some(j + 1);
                    break;
                }
                j += 1;
            }
            if let Some(end) = end {
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&source[copied..]);
    drop_blank_lines(&out)
}
