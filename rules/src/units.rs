//! Units shared by rule files and the config: sizes such as `64KiB` or `1MiB`.

/// A size in bytes: a number with an optional unit (`B`, `KiB`, `MiB`, `KB`, `MB`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size such as 65536, 64KiB or 1MiB"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "KB" => 1000,
        "MB" => 1_000_000,
        _ => return Err(format!("`{s}` is not a size such as 65536, 64KiB or 1MiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}
