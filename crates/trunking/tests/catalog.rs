//! The catalog mirrors the product documentation's response-code tables: every code the
//! troubleshooting section lists (ranges such as `D10-D17` expanded) is in the catalog with the
//! same SIP status, and every coded catalog row is in the documentation. The documentation is
//! read in place from `../shared/reference/product-docs.md`; without it the test says so on one
//! line and skips, unless `OPENTRUNK_REQUIRE_CONFORMANCE=1` (CI) makes it required.

use std::collections::BTreeMap;
use std::path::PathBuf;

use trunking::catalog::{CATALOG, Reason};

fn product_docs() -> Option<String> {
    let path = std::env::var_os("OPENTRUNK_PRODUCT_DOCS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/product-docs.md"));
    match std::fs::read_to_string(&path) {
        Ok(s) => Some(s),
        Err(e) => {
            if std::env::var("OPENTRUNK_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
                panic!("product documentation required but not readable at {}: {e}", path.display());
            }
            println!("skipped: product documentation not found at {}", path.display());
            None
        }
    }
}

/// `D10-D17` -> D10 ... D17; `PE1-PE6` -> PE1 ... PE6; `D1` -> D1.
fn expand(cell: &str) -> Vec<String> {
    let split = |c: &str| {
        let at = c.find(|ch: char| ch.is_ascii_digit()).unwrap_or(c.len());
        (c[..at].to_owned(), c[at..].parse::<u32>().ok())
    };
    match cell.split_once('-') {
        Some((a, b)) => {
            let ((pa, na), (pb, nb)) = (split(a), split(b));
            assert_eq!(pa, pb, "range {cell}");
            let (na, nb) = (na.expect("range start"), nb.expect("range end"));
            let width = a.len() - pa.len();
            (na..=nb).map(|n| format!("{pa}{n:0width$}")).collect()
        }
        None => vec![cell.to_owned()],
    }
}

/// Every `| CODE | STATUS | description | resolution |` row of the "Response Codes" section.
fn documented_codes(docs: &str) -> BTreeMap<String, u16> {
    let start = docs.find("### Response Codes").expect("a Response Codes section");
    let section = &docs[start..];
    let end = section.find("\n---").unwrap_or(section.len());
    let mut codes = BTreeMap::new();
    for row in section[..end].split('|').collect::<Vec<_>>().windows(2) {
        let (code, status) = (row[0].trim(), row[1].trim());
        let looks_like_code = code.len() <= 8
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && code.chars().any(|c| c.is_ascii_digit());
        if let (true, Ok(status)) = (looks_like_code, status.parse::<u16>()) {
            for c in expand(code) {
                codes.insert(c, status);
            }
        }
    }
    codes
}

#[test]
fn catalog_mirrors_the_documentation() {
    let Some(docs) = product_docs() else { return };
    let documented = documented_codes(&docs);
    assert!(documented.len() > 60, "parsed only {documented:?}");
    for (code, status) in &documented {
        let reason = Reason::from_code(code).unwrap_or_else(|| panic!("{code} is documented but not catalogued"));
        assert_eq!(reason.response().status, *status, "{code}");
    }
    for e in CATALOG.iter().filter(|e| !e.code.is_empty()) {
        assert!(documented.contains_key(e.code), "{} is catalogued but not documented", e.code);
    }
}

#[test]
fn ranges_expand() {
    assert_eq!(expand("D10-D12"), ["D10", "D11", "D12"]);
    assert_eq!(expand("PE1-PE3"), ["PE1", "PE2", "PE3"]);
    assert_eq!(expand("P05-P06"), ["P05", "P06"]);
    assert_eq!(expand("RG1"), ["RG1"]);
}
