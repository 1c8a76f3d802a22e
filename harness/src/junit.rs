//! JUnit XML for CI: one testcase per scenario, and the merge of the reports that CI shards
//! (`harness run --shard K/N --junit …`) wrote, so the CI system shows one table.

use crate::scenario::{Outcome, Verdict};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text inside CDATA: a `]]>` in it would end the section early.
fn cdata(s: &str) -> String {
    s.replace("]]>", "]]]]><![CDATA[>")
}

/// One `<testsuite>` named `suite` for these results: each scenario a testcase, a failed
/// expectation a `<failure>` (with the ladder), a scenario that could not run an `<error>`.
pub fn testsuite(suite: &str, results: &[(String, Result<Outcome, String>)]) -> String {
    testsuite_with_pages(suite, results, &std::collections::BTreeMap::new())
}

/// [`testsuite`], with each scenario's run report (`harness run --report`) linked from its
/// testcase: a `report` property and the path in `<system-out>`, which CI systems show.
pub fn testsuite_with_pages(
    suite: &str,
    results: &[(String, Result<Outcome, String>)],
    pages: &std::collections::BTreeMap<String, std::path::PathBuf>,
) -> String {
    let failures = results
        .iter()
        .filter(|(_, r)| matches!(r, Ok(o) if o.verdict == Verdict::Fail))
        .count();
    let errors = results.iter().filter(|(_, r)| r.is_err()).count();
    let time: f64 = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|o| o.duration.as_secs_f64())
        .sum();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\">\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        results.len(),
        escape(suite),
        results.len()
    );
    for (name, r) in results {
        match r {
            Ok(o) => {
                x.push_str(&format!(
                    "  <testcase classname=\"scenarios\" name=\"{}\" time=\"{:.3}\">\n",
                    escape(name),
                    o.duration.as_secs_f64()
                ));
                if let Some(page) = pages.get(name) {
                    let page = escape(&page.display().to_string());
                    x.push_str(&format!(
                        "    <properties><property name=\"report\" value=\"{page}\"/></properties>\n"
                    ));
                }
                if o.verdict == Verdict::Fail {
                    let msg: Vec<String> = o
                        .checks
                        .iter()
                        .filter(|c| !c.1)
                        .map(|c| format!("{} ({})", c.0, c.2))
                        .chain(o.error.iter().cloned())
                        .collect();
                    x.push_str(&format!(
                        "    <failure message=\"{}\"><![CDATA[{}]]></failure>\n",
                        escape(&msg.join("; ")),
                        cdata(&o.ladder)
                    ));
                }
                if let Some(page) = pages.get(name) {
                    x.push_str(&format!(
                        "    <system-out>report: {}</system-out>\n",
                        escape(&page.display().to_string())
                    ));
                }
            }
            Err(e) => {
                x.push_str(&format!(
                    "  <testcase classname=\"scenarios\" name=\"{}\" time=\"0\">\n    <error message=\"{}\"/>\n",
                    escape(name),
                    escape(e)
                ));
            }
        }
        x.push_str("  </testcase>\n");
    }
    x.push_str("</testsuite>\n</testsuites>\n");
    x
}

/// The value of attribute `name` in an element's start tag.
fn attribute(tag: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    tag[at..].split('"').next()?.trim().parse().ok()
}

/// One report holding every `<testsuite>` of `reports` (each a whole JUnit file), under a
/// `<testsuites>` whose totals add theirs up. Fails on a file with no testsuite, so a shard that
/// crashed before writing is not silently missing from the total.
pub fn merge(reports: &[(String, String)]) -> Result<String, String> {
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let mut body = String::new();
    for (file, xml) in reports {
        let mut rest = xml.as_str();
        let mut found = 0;
        while let Some(start) = rest
            .find("<testsuite ")
            .or_else(|| rest.find("<testsuite>"))
        {
            let tail = &rest[start..];
            let tag_end = tail
                .find('>')
                .ok_or_else(|| format!("{file}: a <testsuite> tag does not end"))?;
            let tag = &tail[..tag_end];
            let len = if tag.ends_with('/') {
                tag_end + 1
            } else {
                tail.find("</testsuite>")
                    .ok_or_else(|| format!("{file}: <testsuite> without </testsuite>"))?
                    + "</testsuite>".len()
            };
            tests += attribute(tag, "tests").unwrap_or(0);
            failures += attribute(tag, "failures").unwrap_or(0);
            errors += attribute(tag, "errors").unwrap_or(0);
            body.push_str(&tail[..len]);
            body.push('\n');
            found += 1;
            rest = &tail[len..];
        }
        if found == 0 {
            return Err(format!(
                "{file}: no <testsuite> in it (not a JUnit report?)"
            ));
        }
    }
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n{body}</testsuites>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge_into_one_report_with_the_totals_added_up() {
        let one = testsuite("shard 1/2", &[("a".into(), Err("no root".into()))]);
        let two = testsuite(
            "shard 2/2",
            &[
                ("b".into(), Err("no nft".into())),
                ("c".into(), Err("x".into())),
            ],
        );
        let m = merge(&[("1.xml".into(), one), ("2.xml".into(), two)]).unwrap();
        assert!(
            m.contains("<testsuites tests=\"3\" failures=\"0\" errors=\"3\">"),
            "{m}"
        );
        assert_eq!(m.matches("<testsuite ").count(), 2, "{m}");
        assert_eq!(m.matches("<testcase ").count(), 3, "{m}");
        assert!(m.contains("name=\"shard 2/2\""), "{m}");
    }

    #[test]
    fn a_file_without_a_testsuite_is_refused_by_name() {
        let e = merge(&[("empty.xml".into(), "<x/>".into())]).unwrap_err();
        assert_eq!(e, "empty.xml: no <testsuite> in it (not a JUnit report?)");
    }

    #[test]
    fn cdata_cannot_be_closed_by_the_ladder() {
        assert_eq!(cdata("a]]>b"), "a]]]]><![CDATA[>b");
    }
}
