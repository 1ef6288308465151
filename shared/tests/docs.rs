//! `docs/architecture.md` names files and folders of the tree; each must exist, so the map a
//! newcomer reads is the tree they find.

use std::path::Path;

#[test]
fn every_path_the_architecture_doc_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap_or_default();
    assert!(!doc.is_empty(), "docs/architecture.md is missing");
    let tops = [
        "api/",
        "worker/",
        "shared/",
        "payctl/",
        "tools/",
        "bench/",
        "stripe-sim/",
    ];
    let mut missing = Vec::new();
    for quoted in doc.split('`').skip(1).step_by(2) {
        let path = quoted.trim_end_matches(['.', ',', ':']);
        let looks_like_a_path =
            tops.iter().any(|t| path.starts_with(t)) && !path.contains(' ') && !path.contains('*');
        if looks_like_a_path && !root.join(path).exists() {
            missing.push(path.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "named in docs/architecture.md but not in the tree: {missing:?}"
    );
}
