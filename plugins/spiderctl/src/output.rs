//! How the reporting commands (`status`, `gc`, `doctor`) print, as kubectl does: a table by
//! default, `-o wide` with more columns, `-o name` one name per line, `-o json|yaml` the
//! whole report in a documented, stable shape (README: spiderctl output), `--no-headers` for
//! tables without their header line. Tables size their columns from the data.

use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The report as one JSON object.
    Json,
    /// The report as one YAML document.
    Yaml,
    /// The table with more columns.
    Wide,
    /// One name per line (`kind/name`), for scripts.
    Name,
}

#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct OutputArgs {
    /// Output format (default: a table).
    #[arg(short = 'o', long = "output", value_enum)]
    pub format: Option<Format>,
    /// Print tables without their header line.
    #[arg(long)]
    pub no_headers: bool,
}

impl OutputArgs {
    pub fn wide(&self) -> bool {
        self.format == Some(Format::Wide)
    }

    /// Prints `report` as JSON or YAML and returns true, or returns false for the table and
    /// name formats, which the command prints itself.
    pub fn print_structured<T: Serialize>(&self, report: &T) -> Result<bool, String> {
        match self.format.and_then(|f| structured(f, report)) {
            Some(text) => {
                print!(
                    "{}",
                    text.map_err(|e| format!("cannot write the report: {e}"))?
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// `report` as JSON (pretty, ending in a newline) or YAML; None for the other formats.
fn structured<T: Serialize>(format: Format, report: &T) -> Option<Result<String, String>> {
    Some(match format {
        Format::Json => serde_json::to_string_pretty(report)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Format::Yaml => yaml_serde::to_string(report).map_err(|e| e.to_string()),
        Format::Wide | Format::Name => return None,
    })
}

/// A table whose columns are as wide as their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Columns are separated by this many spaces, as kubectl does.
const GAP: usize = 3;

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The lines, each with `indent` in front; the last column is not padded, so no line ends
    /// in spaces.
    pub fn render(&self, indent: &str, no_headers: bool) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        let lines: Vec<&Vec<String>> = (!no_headers)
            .then_some(&header)
            .into_iter()
            .chain(&self.rows)
            .collect();
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in lines {
            let mut text = String::from(indent);
            for (i, cell) in line.iter().enumerate() {
                text.push_str(cell);
                if i + 1 < line.len() {
                    let pad = widths[i] - cell.chars().count() + GAP;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a report's YAML says is what its JSON says: one shape, two spellings.
    #[test]
    fn yaml_and_json_are_the_same_object() {
        #[derive(Serialize)]
        struct Report {
            pools: Vec<(String, Option<u64>)>,
            free: Option<u64>,
            name: &'static str,
        }
        let report = Report {
            pools: vec![("a".into(), Some(1)), ("b".into(), None)],
            free: None,
            name: "yes",
        };
        let json: serde_json::Value =
            serde_json::from_str(&structured(Format::Json, &report).unwrap().unwrap()).unwrap();
        let yaml: serde_json::Value =
            yaml_serde::from_str(&structured(Format::Yaml, &report).unwrap().unwrap()).unwrap();
        assert_eq!(json, yaml);
        assert_eq!(json["free"], serde_json::Value::Null);
        assert!(structured(Format::Wide, &report).is_none());
    }

    #[test]
    fn columns_fit_the_longest_cell_and_lines_end_without_spaces() {
        let mut t = Table::new(&["POOL", "FREE", "STATE"]);
        t.row(vec![
            "a-very-long-pool-name-indeed".into(),
            "1".into(),
            "".into(),
        ]);
        t.row(vec!["p".into(), "200".into(), "disabled".into()]);
        assert_eq!(
            t.render("", false),
            "POOL                           FREE   STATE\n\
             a-very-long-pool-name-indeed   1\n\
             p                              200    disabled\n"
        );
        assert_eq!(
            t.render("  ", true),
            "  a-very-long-pool-name-indeed   1\n  p                              200   disabled\n"
        );
    }
}
