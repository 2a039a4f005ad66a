//! Checks a Grafana dashboard against what a process exports: every `sluice_…` series a
//! query names must be in the process's Prometheus text, and every label a query groups by
//! (`by (…)`) must be on a series it names. A dashboard that queries a renamed metric or a
//! label nobody sets shows empty panels and no error; the runtime's and the operator's
//! tests run this over `config/dashboards/` so that cannot ship.

use std::collections::{BTreeMap, BTreeSet};

/// The problems of `dashboard` (Grafana JSON) against `exposition` (Prometheus text), for
/// the series `owned` says this process exports; empty when every query fits.
pub fn problems(dashboard: &str, exposition: &str, owned: impl Fn(&str) -> bool) -> Vec<String> {
    let json: serde_json::Value = match serde_json::from_str(dashboard) {
        Ok(json) => json,
        Err(e) => return vec![format!("the dashboard is not JSON: {e}")],
    };
    let mut queries = Vec::new();
    collect_queries(&json, &mut queries);
    if queries.is_empty() {
        return vec!["the dashboard has no queries".into()];
    }
    let exported = labels_by_series(exposition);
    let mut problems = Vec::new();
    for query in &queries {
        let names: Vec<&str> = series_names(query)
            .into_iter()
            .filter(|n| owned(n))
            .collect();
        for name in &names {
            if !exported.contains_key(*name) {
                problems.push(format!("{name} is not exported (in `{query}`)"));
            }
        }
        if names.is_empty() {
            continue;
        }
        for label in grouping_labels(query) {
            let on_a_series = names.iter().any(|n| {
                exported
                    .get(*n)
                    .is_some_and(|labels| labels.contains(label))
            });
            if !on_a_series {
                problems.push(format!("no series of `{query}` has the label {label}"));
            }
        }
    }
    problems
}

/// Every `expr` of the panels' targets and every query of the template variables.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The `sluice_…` identifiers of a query.
fn series_names(query: &str) -> BTreeSet<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("sluice_") {
        let preceded = rest[..at].chars().next_back().is_some_and(is_name);
        let end = rest[at..]
            .find(|c: char| !is_name(c))
            .map_or(rest.len(), |e| at + e);
        if !preceded {
            names.insert(&rest[at..end]);
        }
        rest = &rest[end..];
    }
    names
}

/// The labels of every `by (…)` clause of a query.
fn grouping_labels(query: &str) -> BTreeSet<&str> {
    let mut labels = BTreeSet::new();
    let mut rest = query;
    while let Some(at) = rest.find("by (") {
        let inner = &rest[at + 4..];
        let Some(close) = inner.find(')') else { break };
        labels.extend(
            inner[..close]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty()),
        );
        rest = &inner[close..];
    }
    labels
}

/// Each series name of a Prometheus text exposition with the label names it carries.
fn labels_by_series(exposition: &str) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut series: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = series.entry(&line[..name_end]).or_default();
        if let Some(block) = line[name_end..].strip_prefix('{') {
            let block = block.split('}').next().unwrap_or_default();
            // Label values are quoted and may hold commas: take each name before `="`.
            let mut rest = block;
            while let Some(eq) = rest.find("=\"") {
                labels.insert(rest[..eq].trim_start_matches(',').trim());
                let after = &rest[eq + 2..];
                let close = closing_quote(after).map_or(after.len(), |c| c + 1);
                rest = &after[close..];
            }
        }
    }
    series
}

/// The index of the quote that ends a label value (skipping escaped quotes).
fn closing_quote(value: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# TYPE sluice_a_total counter\n\
        sluice_a_total{job=\"q,5\",operator=\"x\\\"y\"} 3\n\
        # TYPE sluice_b_seconds summary\n\
        sluice_b_seconds_sum{operation=\"Upgrade\"} 1\n\
        sluice_b_seconds_count{operation=\"Upgrade\"} 1\n\
        sluice_c 1\n";

    fn dashboard(expr: &str) -> String {
        serde_json::json!({"panels": [{"targets": [{"expr": expr}]}]}).to_string()
    }

    #[test]
    fn a_query_of_exported_series_and_labels_fits() {
        let expr = "sum by (job, operator) (rate(sluice_a_total[1m])) / sum by (operation) (sluice_b_seconds_count) + sluice_c";
        assert_eq!(
            problems(&dashboard(expr), EXPOSITION, |_| true),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_unknown_series_or_label_is_named() {
        let expr = "sum by (kind) (rate(sluice_b_seconds_sum[5m])) + sluice_d";
        assert_eq!(
            problems(&dashboard(expr), EXPOSITION, |_| true),
            [
                format!("sluice_d is not exported (in `{expr}`)"),
                format!("no series of `{expr}` has the label kind"),
            ]
        );
        assert_eq!(
            problems(&dashboard(expr), EXPOSITION, |n| n != "sluice_d").len(),
            1
        );
    }
}
