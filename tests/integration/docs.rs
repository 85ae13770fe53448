//! The README's failure table names a test for each row: each of them exists.

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
