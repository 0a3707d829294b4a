//! `scripts/layers.sh`, the import-cycle check CI runs: it fails on a cycle it is shown and names
//! it, it reads past comments, strings and test modules, and the real tree passes.
//!
//! A test here rather than a self-test mode of the script: `cargo test` is what everyone runs
//! before a commit, so a broken check (or a new cycle) shows there first, with the other tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the script on the tree at `root`.
fn layers(root: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/layers.sh");
    Command::new("bash")
        .arg(script)
        .arg(root)
        .output()
        .expect("run scripts/layers.sh")
}

/// A crate in a temporary directory: `files` are (path under src/, contents).
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn layers_fails_on_a_cycle_between_two_files_and_names_it() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(pub B);\n"),
        // `super::` in a file means the crate root here.
        ("b.rs", "pub struct B;\npub fn f(_: &super::a::A) {}\n"),
    ]);
    let output = layers(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("module cycle: a -> b -> a"), "{text}");
    assert!(text.contains("file cycle: a -> b -> a"), "{text}");
    assert!(
        text.contains("(src/b.rs:2)"),
        "the edge's file and line: {text}"
    );
}

#[test]
fn layers_follows_re_exports_to_the_file_that_defines_the_item() {
    // `crate::x::X` is defined in x/inner.rs: the cycle is inner <-> y, and x <-> y between
    // the top-level modules; x/mod.rs, a facade, is in neither.
    let dir = tree(&[
        ("lib.rs", "pub mod x;\npub mod y;\n"),
        ("x/mod.rs", "mod inner;\npub use inner::X;\n"),
        ("x/inner.rs", "pub struct X;\npub fn f(_: crate::y::Y) {}\n"),
        (
            "y.rs",
            "use crate::x::{X as Renamed};\npub struct Y(pub Renamed);\n",
        ),
    ]);
    let output = layers(dir.path());
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("module cycle: x -> y -> x"), "{text}");
    assert!(
        text.contains("file cycle: x::inner -> y -> x::inner"),
        "{text}"
    );
}

#[test]
fn layers_passes_an_acyclic_tree_whatever_its_comments_strings_and_tests_say() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(pub B);\n"),
        (
            "b.rs",
            "//! Not [`crate::a::A`].\npub struct B;\n\
             pub const TEXT: &str = \"crate::a::A\";\n\
             /* use crate::a::A; */\n\
             #[cfg(test)]\nmod tests {\n    use crate::a::A;\n    fn f(_: A) { let _ = '{'; }\n}\n",
        ),
    ]);
    let output = layers(dir.path());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("no import cycle"), "{stdout}");
}
#[test]
fn the_real_tree_has_no_import_cycle() {
    let output = layers(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
