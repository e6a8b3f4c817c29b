//! The optional grammars (`--features all-languages`): units, symbols, docs.

#[allow(unused_imports)]
use forge_miner::{Miner, UnitKind};

#[cfg(feature = "javascript")]
#[test]
fn javascript_units() {
    let src = "import fs from 'fs';\n\n/** Adds two numbers. */\nexport function add(a, b) {\n  return a + b;\n}\n\nclass Box {\n  get(k) { return this.m[k]; }\n}\n\nconst twice = (x) => x * 2;\n";
    let f = Miner::new(".").mine_text("lib/math.js", src).expect("mine");
    let s: Vec<(&str, UnitKind)> = f
        .units
        .iter()
        .map(|u| (u.symbol.as_str(), u.kind))
        .collect();
    assert_eq!(
        s,
        [
            ("lib.math.add", UnitKind::Function),
            ("lib.math.Box", UnitKind::Class),
            ("lib.math.Box.get", UnitKind::Method),
            ("lib.math.twice", UnitKind::Function),
        ]
    );
    assert_eq!(f.units[0].doc.as_deref(), Some("Adds two numbers."));
    assert_eq!(f.units[0].imports, ["import fs from 'fs';"]);
}

#[cfg(feature = "typescript")]
#[test]
fn typescript_units() {
    let src = "interface Shape {\n  area(): number;\n}\n\nexport class Sq implements Shape {\n  constructor(private s: number) {}\n  area(): number { return this.s * this.s; }\n}\n\ntype Id = string;\n";
    let f = Miner::new(".").mine_text("shapes.ts", src).expect("mine");
    let s: Vec<&str> = f.units.iter().map(|u| u.symbol.as_str()).collect();
    assert!(s.contains(&"shapes.Shape"), "{s:?}");
    assert!(s.contains(&"shapes.Sq.area"), "{s:?}");
    assert!(s.contains(&"shapes.Id"), "{s:?}");
}

#[cfg(feature = "go")]
#[test]
fn go_units() {
    let src = "package geo\n\nimport \"math\"\n\n// Point is a 2-D point.\ntype Point struct{ X, Y float64 }\n\n// Dist returns the distance to q.\nfunc (p *Point) Dist(q Point) float64 {\n\treturn math.Hypot(p.X-q.X, p.Y-q.Y)\n}\n\nfunc Origin() Point { return Point{} }\n";
    let f = Miner::new(".")
        .mine_text("geo/point.go", src)
        .expect("mine");
    let s: Vec<(&str, UnitKind)> = f
        .units
        .iter()
        .map(|u| (u.symbol.as_str(), u.kind))
        .collect();
    assert_eq!(
        s,
        [
            ("geo.Point", UnitKind::Struct),
            ("geo.Point.Dist", UnitKind::Method),
            ("geo.Origin", UnitKind::Function),
        ]
    );
    assert_eq!(
        f.units[1].doc.as_deref(),
        Some("Dist returns the distance to q.")
    );
}
