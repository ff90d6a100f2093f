//! The flags of `kite attach --run` that RunTask takes as they are:
//! environment variables and placement constraints.

/// Parses `--env NAME=VALUE`: the name is what precedes the first `=`
/// (not empty, no whitespace); the value may be empty or hold `=`.
pub fn parse_env_var(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(format!(
            "'{s}' has no '=': give NAME=VALUE (an empty value is NAME=)"
        ));
    };
    if name.is_empty() {
        return Err(format!("'{s}' has no name before '=': give NAME=VALUE"));
    }
    if let Some(c) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "'{name}' is not a variable name: it holds {c:?} (give NAME=VALUE)"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses `--placement-constraint EXPR`, a cluster query language
/// expression for a `memberOf` constraint (ECS checks its syntax): not
/// empty, at most 2,000 characters, as ECS allows.
pub fn parse_placement_constraint(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(
            "the placement constraint is empty: give a memberOf expression, \
             e.g. 'attribute:ecs.instance-type =~ t3.*'"
                .into(),
        );
    }
    if s.chars().count() > 2000 {
        return Err("the placement constraint is longer than 2,000 characters".into());
    }
    Ok(s.to_owned())
}

/// A comma-separated list of AWS ids (`--subnets`, `--security-groups`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdList(pub Vec<String>);

/// Parses an [`IdList`]: each id non-empty, without whitespace.
pub fn parse_id_list(s: &str) -> Result<IdList, String> {
    let ids: Vec<String> = s.split(',').map(|id| id.trim().to_owned()).collect();
    if let Some(bad) = ids
        .iter()
        .find(|id| id.is_empty() || id.contains(char::is_whitespace))
    {
        return Err(format!(
            "'{s}' is not a list of ids ('{bad}'): give them comma-separated, e.g. subnet-1,subnet-2"
        ));
    }
    Ok(IdList(ids))
}
