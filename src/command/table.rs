//! Plain-text tables for the admin commands: a header row and left-aligned columns, two spaces
//! apart, so they read well in a terminal and split easily with `awk`.

use std::io::{self, Write};

/// Writes `header` and `rows` as aligned columns. Rows shorter than the header leave their
/// last cells empty.
pub fn write_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|title| title.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    write_row(out, &widths, header.iter().copied())?;
    for row in rows {
        write_row(out, &widths, row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// One line: every cell padded to its column's width but the last, which ends the line.
fn write_row<'a>(
    out: &mut impl Write,
    widths: &[usize],
    cells: impl Iterator<Item = &'a str>,
) -> io::Result<()> {
    let mut line = String::new();
    for (width, cell) in widths.iter().zip(cells) {
        if !line.is_empty() {
            line.push_str("  ");
        }
        line.push_str(&format!("{cell:<width$}"));
    }
    writeln!(out, "{}", line.trim_end())
}

/// A retention limit for people: `unlimited` for negative values.
pub fn limit(value: i64) -> String {
    if value < 0 {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["orders".to_owned(), "4".to_owned()],
            vec!["t".to_owned(), "12".to_owned()],
        ];
        write_table(&mut out, &["NAME", "PARTITIONS"], &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "NAME    PARTITIONS\norders  4\nt       12\n");
        assert_eq!(limit(-1), "unlimited");
        assert_eq!(limit(5), "5");
    }
}
