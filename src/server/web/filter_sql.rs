//! The SQL conditions a [`SessionFilter`] stands for, shared by the web reads of both SQL
//! backends: which column each filter compares, and how, is decided here once; each backend only
//! writes its own placeholders and parameter types.

use super::model::SessionFilter;
use crate::server::storage::columns::signed;

/// The one parameter of a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Integer(i64),
}

/// Each condition `f` sets on the `sessions` table, `?` standing for its parameter, in a fixed
/// order (none: every session).
pub fn conditions(f: &SessionFilter) -> Vec<(&'static str, Param)> {
    let text = |v: &Option<String>| v.clone().map(Param::Text);
    let time = |v: Option<u64>| v.map(|t| Param::Integer(signed(t)));
    [
        ("agent = ?", text(&f.agent)),
        // A session whose repository is unknown is filed under its working directory.
        ("coalesce(repository, cwd) = ?", text(&f.repository)),
        ("owner = ?", text(&f.machine)),
        ("first_seen >= ?", time(f.from)),
        ("first_seen < ?", time(f.to)),
    ]
    .into_iter()
    .filter_map(|(clause, param)| Some((clause, param?)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_filter_is_one_condition_in_a_fixed_order() {
        assert!(conditions(&SessionFilter::default()).is_empty());
        let f = SessionFilter {
            machine: Some("m".into()),
            agent: Some("a".into()),
            to: Some(u64::MAX),
            ..SessionFilter::default()
        };
        assert_eq!(
            conditions(&f),
            vec![
                ("agent = ?", Param::Text("a".into())),
                ("owner = ?", Param::Text("m".into())),
                ("first_seen < ?", Param::Integer(i64::MAX)),
            ]
        );
    }
}
