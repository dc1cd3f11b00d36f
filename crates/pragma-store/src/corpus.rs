//! Corpora read as a stream of documents, never whole into memory.
//!
//! - `.txt`: one document per blank-line-separated block (or per line with
//!   [`TextSplit::Lines`]).
//! - `.jsonl`: one JSON object per line, `{"text": ...}` or a chat
//!   `{"messages": [{"role": ..., "content": ...}, ...]}`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use pragma_model::tokenizer::ChatMessage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a `.txt` file is cut into documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSplit {
    /// Blocks separated by one or more blank lines.
    Blocks,
    /// Every non-empty line is a document.
    Lines,
}

/// One document: plain text or chat messages (rendered with the model's template).
#[derive(Clone, Debug, PartialEq)]
pub enum Doc {
    Text(String),
    Chat(Vec<ChatMessage>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Text(TextSplit),
    Jsonl,
}

impl Format {
    /// Guess from the extension: `.jsonl`/`.json` -> JSONL, anything else text.
    pub fn detect(path: &Path, split: TextSplit) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") | Some("json") => Format::Jsonl,
            _ => Format::Text(split),
        }
    }
}

/// Streams documents from a corpus file. Each item carries the 1-based line
/// where the document starts, for error messages.
pub struct DocReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    format: Format,
    line_no: usize,
}

impl DocReader {
    pub fn open(path: &Path, format: Format) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            lines: BufReader::new(f).lines(),
            format,
            line_no: 0,
        })
    }

    fn next_line(&mut self) -> Option<Result<String>> {
        let l = self.lines.next()?;
        self.line_no += 1;
        Some(l.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::Corpus(format!(
                    "{}:{}: not valid UTF-8 text (expected UTF-8; convert the file, e.g. with iconv)",
                    self.path.display(),
                    self.line_no
                ))
            } else {
                Error::io(&self.path, e)
            }
        }))
    }
}

#[derive(Deserialize)]
struct JsonDoc {
    text: Option<String>,
    messages: Option<Vec<ChatMessage>>,
}

impl Iterator for DocReader {
    type Item = Result<(usize, Doc)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.format {
            Format::Text(TextSplit::Lines) => loop {
                match self.next_line()? {
                    Err(e) => return Some(Err(e)),
                    Ok(l) if l.trim().is_empty() => continue,
                    Ok(l) => return Some(Ok((self.line_no, Doc::Text(l)))),
                }
            },
            Format::Text(TextSplit::Blocks) => {
                let mut block: Vec<String> = Vec::new();
                let mut start = 0;
                loop {
                    match self.next_line() {
                        None => break,
                        Some(Err(e)) => return Some(Err(e)),
                        Some(Ok(l)) if l.trim().is_empty() => {
                            if !block.is_empty() {
                                break;
                            }
                        }
                        Some(Ok(l)) => {
                            if block.is_empty() {
                                start = self.line_no;
                            }
                            block.push(l);
                        }
                    }
                }
                if block.is_empty() {
                    None
                } else {
                    Some(Ok((start, Doc::Text(block.join("\n")))))
                }
            }
            Format::Jsonl => loop {
                let l = match self.next_line()? {
                    Err(e) => return Some(Err(e)),
                    Ok(l) => l,
                };
                if l.trim().is_empty() {
                    continue;
                }
                let at = format!("{}:{}", self.path.display(), self.line_no);
                let parsed: std::result::Result<JsonDoc, _> = serde_json::from_str(&l);
                return Some(match parsed {
                    Ok(JsonDoc { text: Some(t), .. }) => Ok((self.line_no, Doc::Text(t))),
                    Ok(JsonDoc {
                        messages: Some(m), ..
                    }) if !m.is_empty() => Ok((self.line_no, Doc::Chat(m))),
                    Ok(_) => Err(Error::Corpus(format!(
                        "{at}: expected an object with \"text\" or a non-empty \"messages\" list"
                    ))),
                    Err(e) => Err(Error::Corpus(format!("{at}: invalid JSON: {e}"))),
                });
            },
        }
    }
}
