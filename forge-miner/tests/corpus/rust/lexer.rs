//! A small lexer for arithmetic expressions.
//!
//! Produces [`Token`]s with their byte spans; errors carry the offending offset.

use std::fmt;
use std::iter::Peekable;
use std::str::CharIndices;

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A floating-point number.
    Number(f64),
    /// An identifier such as `x` or `sin`.
    Ident(String),
    /// One of `+ - * / ( )`.
    Op(char),
}

/// A token with the byte range it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub token: Token,
    pub start: usize,
    pub end: usize,
}

/// Errors of [`Lexer::tokenize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexError {
    /// A character that starts no token.
    Unexpected { ch: char, at: usize },
    /// A number that does not parse.
    BadNumber { text: String, at: usize },
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LexError::Unexpected { ch, at } => write!(f, "unexpected {ch:?} at byte {at}"),
            LexError::BadNumber { text, at } => write!(f, "bad number {text:?} at byte {at}"),
        }
    }
}

impl std::error::Error for LexError {}

/// Turns source text into tokens.
pub struct Lexer<'a> {
    src: &'a str,
    chars: Peekable<CharIndices<'a>>,
}

impl<'a> Lexer<'a> {
    /// Creates a lexer over `src`.
    pub fn new(src: &'a str) -> Self {
        Self {
            src,
            chars: src.char_indices().peekable(),
        }
    }

    /// Reads every token, or the first error.
    pub fn tokenize(mut self) -> Result<Vec<Spanned>, LexError> {
        let mut out = Vec::new();
        while let Some(&(at, ch)) = self.chars.peek() {
            if ch.is_whitespace() {
                self.chars.next();
                continue;
            }
            let spanned = if ch.is_ascii_digit() || ch == '.' {
                self.number(at)?
            } else if ch.is_alphabetic() || ch == '_' {
                self.ident(at)
            } else if "+-*/()".contains(ch) {
                self.chars.next();
                Spanned {
                    token: Token::Op(ch),
                    start: at,
                    end: at + 1,
                }
            } else {
                return Err(LexError::Unexpected { ch, at });
            };
            out.push(spanned);
        }
        Ok(out)
    }

    fn number(&mut self, start: usize) -> Result<Spanned, LexError> {
        let end = self.take_while(|c| c.is_ascii_digit() || c == '.' || c == 'e');
        let text = &self.src[start..end];
        let value = text.parse::<f64>().map_err(|_| LexError::BadNumber {
            text: text.to_string(),
            at: start,
        })?;
        Ok(Spanned {
            token: Token::Number(value),
            start,
            end,
        })
    }

    fn ident(&mut self, start: usize) -> Spanned {
        let end = self.take_while(|c| c.is_alphanumeric() || c == '_');
        Spanned {
            token: Token::Ident(self.src[start..end].to_string()),
            start,
            end,
        }
    }

    /// Advances while `pred` holds; returns the end offset.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> usize {
        let mut end = self.src.len();
        while let Some(&(i, c)) = self.chars.peek() {
            if !pred(c) {
                end = i;
                break;
            }
            self.chars.next();
        }
        end
    }
}

/// Something that can be evaluated.
pub trait Eval {
    /// The value under `env`.
    fn eval(&self, env: &dyn Fn(&str) -> Option<f64>) -> Option<f64>;

    /// The value with no variables bound.
    fn eval_const(&self) -> Option<f64> {
        self.eval(&|_| None)
    }
}

/// Counts tokens of each kind.
pub fn histogram(tokens: &[Spanned]) -> [usize; 3] {
    let mut h = [0; 3];
    for t in tokens {
        let i = match t.token {
            Token::Number(_) => 0,
            Token::Ident(_) => 1,
            Token::Op(_) => 2,
        };
        h[i] += 1;
    }
    h
}

macro_rules! op {
    ($c:literal) => {
        Token::Op($c)
    };
}

pub const MAX_TOKENS: usize = 1 << 16;

pub type Tokens = Vec<Spanned>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexes_an_expression() {
        let toks = Lexer::new("1 + x*2").tokenize().unwrap();
        assert_eq!(toks.len(), 5);
        assert_eq!(toks[1].token, op!('+'));
    }

    #[test]
    fn reports_the_offset() {
        let err = Lexer::new("1 $").tokenize().unwrap_err();
        assert_eq!(err, LexError::Unexpected { ch: '$', at: 2 });
    }
}
