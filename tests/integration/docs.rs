//! The docs the tests can check: the README's failure table names a test for each row
//! (each exists), and the problem types page documents every problem type.

#[test]
fn every_row_of_the_failure_table_names_a_test_that_exists() {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("### What a retry gets when something fails")
        .nth(1)
        .expect("the failure table");
    let sources: String =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration"))
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect();
    let mut rows = 0;
    for line in table.lines().skip(2) {
        if !line.starts_with('|') {
            if rows > 0 {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let test = cells[cells.len() - 2].trim_matches('`');
        if test == "test" || test.starts_with("---") {
            continue;
        }
        rows += 1;
        assert!(
            sources.contains(&format!("async fn {test}("))
                || sources.contains(&format!("fn {test}<")),
            "the failure table names {test}, which is not a test"
        );
    }
    assert!(rows >= 12, "only {rows} rows read");
}

/// The problem types page documents each problem type the layer answers with, under the
/// anchor its `Link` points to (the slug), and lists it in its table.
#[test]
fn the_problems_page_has_a_section_for_every_problem_type() {
    let page = include_str!("../../docs/problems.md");
    for kind in tower_idempotency::protocol::ProblemType::ALL {
        let slug = kind.slug();
        assert!(
            page.lines().any(|line| line == format!("# {slug}")),
            "docs/problems.md has no section for {slug}"
        );
        assert!(
            page.contains(&format!("| `{slug}` |")),
            "docs/problems.md's table lacks {slug}"
        );
    }
    let sections = page.lines().filter(|line| line.starts_with("# ")).count();
    assert_eq!(
        sections,
        tower_idempotency::protocol::ProblemType::ALL.len()
    );
}

/// The problems page's gRPC column says the code each problem type is answered with.
#[test]
fn the_problems_page_gives_each_problem_its_grpc_code() {
    const NAMES: [(&str, i32); 10] = [
        ("UNKNOWN", 2),
        ("INVALID_ARGUMENT", 3),
        ("ALREADY_EXISTS", 6),
        ("PERMISSION_DENIED", 7),
        ("RESOURCE_EXHAUSTED", 8),
        ("FAILED_PRECONDITION", 9),
        ("INTERNAL", 13),
        ("UNAVAILABLE", 14),
        ("DATA_LOSS", 15),
        ("OK", 0),
    ];
    let page = include_str!("../../docs/problems.md");
    for kind in tower_idempotency::protocol::ProblemType::ALL {
        let row = page
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", kind.slug())))
            .expect("a row");
        let cell = row.split('|').nth(3).expect("the gRPC column").trim();
        let name = cell.trim_start_matches('`').split('`').next().unwrap();
        let code = NAMES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c);
        assert_eq!(code, Some(kind.grpc_code()), "{}: {cell}", kind.slug());
    }
}
