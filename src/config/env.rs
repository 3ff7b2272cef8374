//! `${VAR}` and `${VAR:-default}` substitution, applied to the raw file text before YAML
//! parsing so that secrets live in the environment, not in the file.
//!
//! Comments are left alone: a commented-out example such as
//! `# secret: "${PORTCULLIS_HS256_SECRET}"` must not demand that the variable exists.

/// Replace every `${NAME}` / `${NAME:-default}` outside comments using `lookup`.
/// Returns `(line number, message)` for the first reference that cannot be resolved.
pub fn substitute(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                (
                    index + 1,
                    "unterminated \"${\" (expected \"}\")".to_string(),
                )
            })?;
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err((
                    index + 1,
                    format!("invalid variable name {name:?} in \"${{...}}\""),
                ));
            }
            match (lookup(name), default) {
                (Some(value), None) => out.push_str(&value),
                (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                (Some(value), Some(_)) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err((
                        index + 1,
                        format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
                    ))
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Byte offset where a YAML comment starts on this line (or the line length).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut prev_is_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_is_space => return i,
            None => {}
        }
        prev_is_space = c.is_whitespace();
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::substitute;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let out = substitute("a: ${SET}\nb: ${UNSET:-dflt}\nc: ${EMPTY:-x}\n", env).unwrap();
        assert_eq!(out, "a: value\nb: dflt\nc: x\n");
    }

    #[test]
    fn missing_variable_names_the_line_and_variable() {
        let err = substitute("a: 1\nb: ${NOPE}\n", env).unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("NOPE"), "{}", err.1);
    }

    #[test]
    fn comments_are_not_substituted() {
        let text = "# x: ${NOPE}\na: \"#${SET}\" # ${NOPE}\n";
        assert_eq!(
            substitute(text, env).unwrap(),
            "# x: ${NOPE}\na: \"#value\" # ${NOPE}\n"
        );
    }

    #[test]
    fn unterminated_and_bad_names_are_errors() {
        assert!(substitute("a: ${SET\n", env).is_err());
        assert!(substitute("a: ${A-B}\n", env).is_err());
    }
}
