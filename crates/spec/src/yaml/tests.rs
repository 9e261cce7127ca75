//! The YAML reader on good and hostile input: positions, duplicates, depth, alias bombs,
//! merge keys.

use super::*;

fn parse_one(text: &str) -> Result<Node, YamlError> {
    parse_stream(text, &PosMap::Identity, Limits::default()).map(|mut docs| docs.remove(0).unwrap())
}

#[test]
fn keys_and_values_keep_their_positions() {
    let root = parse_one("a: 1\nb:\n  c: |\n    hello\n  d: x\n").unwrap();
    let (key, b) = root.entry("b").unwrap();
    assert_eq!(key.pos, Pos { line: 2, column: 1 });
    assert_eq!(b.entry("d").unwrap().0.pos, Pos { line: 5, column: 3 });
    assert_eq!(b.get("c").unwrap().pos, Pos { line: 4, column: 5 });
}

#[test]
fn a_block_scalar_at_the_very_end_of_the_text_reads() {
    // libyaml-safer 0.3 panicked on these (found by fuzzing).
    let node = parse_one("run_command: |\n  make test").unwrap();
    assert_eq!(node.to_json()["run_command"], "make test\n");
    for text in ["|\n -", "x: |\n  -", "a: >\n  folded", "- |\n  x"] {
        assert!(
            parse_stream(text, &PosMap::Identity, Limits::default()).is_ok(),
            "{text:?}"
        );
    }
}

#[test]
fn duplicate_keys_are_refused_at_the_second_one() {
    let err = parse_one("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!(err.pos, Pos { line: 3, column: 1 });
    assert!(err
        .message
        .contains("duplicate key `a` (first defined at line 1)"));
}

#[test]
fn quoting_decides_scalar_types() {
    let root = parse_one(
        "a: true\nb: \"true\"\nc: 12\nd: '12'\ne: 1.5\nf: ~\ng: !!str 7\nh: 1e3\ni: .5x\n",
    )
    .unwrap();
    let json = root.to_json();
    assert_eq!(
        json,
        serde_json::json!({"a": true, "b": "true", "c": 12, "d": "12", "e": 1.5, "f": null, "g": "7", "h": 1000.0, "i": ".5x"})
    );
}

#[test]
fn alias_bombs_are_refused() {
    let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h"])
    {
        doc.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let err = parse_one(&doc).unwrap_err();
    assert!(err.message.contains("alias bomb"), "{err:?}");
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = "- ".repeat(10_000) + "x\n";
    let err = parse_one(&deep).unwrap_err();
    assert!(err.message.contains("nested"), "{err:?}");
    let flow = "[".repeat(10_000);
    let err = parse_one(&flow).unwrap_err();
    assert!(err.message.contains("nested"), "{err:?}");
}

#[test]
fn merge_keys_fill_in_missing_entries() {
    let root = parse_one("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n").unwrap();
    assert_eq!(
        root.get("thing").unwrap().to_json(),
        serde_json::json!({"y": 3, "x": 1})
    );
}

#[test]
fn literal_block_positions_map_back_to_the_file() {
    let outer = parse_one("data:\n  job.yaml: |\n    - job:\n        name: x\n").unwrap();
    let scalar = outer.get("data").unwrap().get("job.yaml").unwrap();
    let map = PosMap::for_scalar(scalar);
    let inner = parse_stream(scalar.as_str().unwrap(), &map, Limits::default()).unwrap();
    let root = inner[0].as_ref().unwrap();
    let Value::Seq(items) = &root.value else {
        panic!()
    };
    let (key, _) = items[0].get("job").unwrap().entry("name").unwrap();
    assert_eq!(key.pos, Pos { line: 4, column: 9 });
}

#[test]
fn offsets_become_positions() {
    assert_eq!(pos_of_offset(b"ab\ncd\xffe", 5), Pos { line: 2, column: 3 });
}
