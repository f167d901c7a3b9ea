//! A small YAML tree that remembers where every node came from.
//!
//! Configuration errors must name the line and column of the offending
//! field, so the loader first turns the text into this tree (built from the
//! events of `saphyr-parser`, a maintained YAML 1.2 parser) and validates
//! the tree, instead of deserialising straight into structs and losing the
//! positions.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deepest nesting the loader accepts; configuration files are shallow, and
/// the bound keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may hold after alias expansion (guards against
/// "billion laughs" documents).
pub const MAX_NODES: usize = 100_000;

/// A 1-based line and column in the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mark {
    /// Line, counting from 1.
    pub line: usize,
    /// Column, counting from 1.
    pub col: usize,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node holds.
    pub value: Value,
    /// Where the node starts.
    pub mark: Mark,
}

/// The content of a node.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A scalar, kept as written; `plain` is false for quoted and block
    /// scalars, which are always strings.
    Scalar {
        /// The scalar's text after unescaping.
        text: String,
        /// Whether the scalar was written without quotes.
        plain: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping whose keys are scalars, in document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text.
    pub text: String,
    /// Where the key is written.
    pub mark: Mark,
}

/// Why the text is not a usable YAML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the problem was found.
    pub mark: Mark,
    /// What the problem is.
    pub message: String,
}

impl Node {
    /// True for a plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's kind for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

enum Frame {
    Seq {
        mark: Mark,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        mark: Mark,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        seen: HashMap<String, Mark>,
    },
}

fn mark_of(m: &saphyr_parser::Marker) -> Mark {
    Mark {
        line: m.line(),
        col: m.col() + 1,
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Scalar { .. } => 1,
        Value::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| 1 + count_nodes(v))
                .sum::<usize>()
        }
    }
}

/// Parses `text` as exactly one YAML document.
///
/// # Errors
/// Syntax errors, duplicate mapping keys, non-scalar keys, more than one
/// document, unknown aliases, and documents nested deeper than
/// [`MAX_DEPTH`] or larger than [`MAX_NODES`] are all reported with their
/// position. An empty document parses as a null scalar.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            mark: mark_of(e.marker()),
            message: e.info().to_owned(),
        })?;
        let mark = mark_of(&span.start);
        if let Some((node, anchor)) = builder.event(event, mark)? {
            builder.attach(node, anchor, mark)?;
        }
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Scalar {
            text: String::new(),
            plain: true,
        },
        mark: Mark { line: 1, col: 1 },
    }))
}

/// The tree being built from the parser's events.
#[derive(Default)]
struct Builder {
    /// The collections still open, innermost last.
    stack: Vec<Frame>,
    /// Anchored nodes by anchor id.
    anchors: HashMap<usize, Node>,
    /// The document's node, once complete.
    root: Option<Node>,
    /// Documents seen.
    documents: usize,
    /// Nodes so far, aliases expanded.
    total_nodes: usize,
}

impl Builder {
    /// The node `event` completes, with its anchor (0 for none), if any.
    fn event(
        &mut self,
        event: Event<'_>,
        mark: Mark,
    ) -> Result<Option<(Node, usize)>, SyntaxError> {
        Ok(match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError {
                        mark,
                        message: "expected a single YAML document, found a second one".into(),
                    });
                }
                None
            }
            Event::Scalar(text, style, anchor, _tag) => Some((
                Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    mark,
                },
                anchor,
            )),
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                    mark,
                    message: "alias refers to an unknown anchor".into(),
                })?;
                self.total_nodes += count_nodes(&node);
                Some((Node { mark, ..node }, 0))
            }
            Event::SequenceStart(anchor, _) => {
                push(
                    &mut self.stack,
                    Frame::Seq {
                        mark,
                        anchor,
                        items: Vec::new(),
                    },
                    mark,
                )?;
                None
            }
            Event::MappingStart(anchor, _) => {
                push(
                    &mut self.stack,
                    Frame::Map {
                        mark,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        seen: HashMap::new(),
                    },
                    mark,
                )?;
                None
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    mark,
                    anchor,
                    items,
                }) => Some((
                    Node {
                        value: Value::Seq(items),
                        mark,
                    },
                    anchor,
                )),
                _ => return Err(internal(mark)),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    mark,
                    anchor,
                    entries,
                    ..
                }) => Some((
                    Node {
                        value: Value::Map(entries),
                        mark,
                    },
                    anchor,
                )),
                _ => return Err(internal(mark)),
            },
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        })
    }

    /// Counts the finished `node`, remembers it under `anchor` (0 for none)
    /// and adds it to the collection it belongs to.
    fn attach(&mut self, node: Node, anchor: usize, mark: Mark) -> Result<(), SyntaxError> {
        self.total_nodes += 1;
        if self.total_nodes > MAX_NODES {
            return Err(SyntaxError {
                mark,
                message: format!(
                    "document has more than {MAX_NODES} nodes after expanding aliases"
                ),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                seen,
                ..
            }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let Value::Scalar { text, .. } = node.value else {
                        return Err(SyntaxError {
                            mark: node.mark,
                            message: "mapping keys must be plain scalars".into(),
                        });
                    };
                    if let Some(first) = seen.get(&text) {
                        return Err(SyntaxError {
                            mark: node.mark,
                            message: format!("duplicate key `{text}` (first defined at {first})"),
                        });
                    }
                    seen.insert(text.clone(), node.mark);
                    *pending_key = Some(Key {
                        text,
                        mark: node.mark,
                    });
                }
            },
        }
        Ok(())
    }
}

fn push(stack: &mut Vec<Frame>, frame: Frame, mark: Mark) -> Result<(), SyntaxError> {
    if stack.len() >= MAX_DEPTH {
        return Err(SyntaxError {
            mark,
            message: format!("document is nested deeper than {MAX_DEPTH} levels"),
        });
    }
    stack.push(frame);
    Ok(())
}

fn internal(mark: Mark) -> SyntaxError {
    SyntaxError {
        mark,
        message: "unbalanced YAML structure".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn nodes_remember_their_line_and_column() {
        let doc = parse("a: 1\nb:\n  c: [x, 'y']\n").unwrap();
        let entries = map(&doc);
        assert_eq!(entries[0].0.mark, Mark { line: 1, col: 1 });
        assert_eq!(entries[1].0.text, "b");
        let inner = map(&entries[1].1);
        assert_eq!(inner[0].0.mark, Mark { line: 3, col: 3 });
        let Value::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].mark, Mark { line: 3, col: 10 });
        assert_eq!(
            items[1].value,
            Value::Scalar {
                text: "y".into(),
                plain: false
            }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_positions() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.mark, Mark { line: 3, col: 1 });
        assert!(
            err.message
                .contains("duplicate key `a` (first defined at 1:1)"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_second_document_is_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("single YAML document"));
    }

    #[test]
    fn aliases_expand_to_their_anchor() {
        let doc = parse("base: &b {x: 1}\ncopy: *b\n").unwrap();
        let entries = map(&doc);
        assert_eq!(map(&entries[1].1)[0].0.text, "x");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nodes after expanding aliases"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(200) + &"]".repeat(200);
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("nested deeper"));
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn an_empty_document_is_null() {
        assert!(parse("").unwrap().is_null());
        assert!(parse("# only a comment\n").unwrap().is_null());
    }
}
