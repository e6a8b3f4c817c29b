//! Print the tree-sitter S-expression of a file (compat debugging aid).
//! `cargo run -p forge-judge --example sexp_dump -- rust FILE`
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(lang), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: sexp_dump LANG FILE");
        std::process::exit(2);
    };
    let code = std::fs::read_to_string(path).unwrap_or_default();
    let mut p = tree_sitter::Parser::new();
    let language: tree_sitter::Language = if lang == "rust" {
        tree_sitter_rust::LANGUAGE.into()
    } else {
        tree_sitter_python::LANGUAGE.into()
    };
    if p.set_language(&language).is_err() {
        std::process::exit(1);
    }
    if let Some(t) = p.parse(&code, None) {
        println!("{}", t.root_node().to_sexp());
    }
}
