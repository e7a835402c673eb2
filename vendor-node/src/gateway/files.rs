//! Serving a folder of files to paid requests, as the gateway's origin.
//!
//! A request path is percent-decoded and resolved under the folder; a path
//! with a `..` segment, a NUL or a backslash, or one that leads out of the
//! folder through a link, is not found. A directory is served by its
//! `index.html`.

use std::path::{Path, PathBuf};

/// The file a request path names under `root`, if there is one.
pub(crate) async fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let mut file = root.to_path_buf();
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == ".." || segment == "." || segment.contains(['\0', '\\']) {
            return None;
        }
        file.push(segment);
    }
    if tokio::fs::metadata(&file).await.ok()?.is_dir() {
        file.push("index.html");
    }
    let canonical = tokio::fs::canonicalize(&file).await.ok()?;
    let root = tokio::fs::canonicalize(root).await.ok()?;
    let is_file = tokio::fs::metadata(&canonical).await.ok()?.is_file();
    (is_file && canonical.starts_with(&root)).then_some(canonical)
}

/// The media type of a file, by its extension.
pub(crate) fn media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not
/// UTF-8.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paths_resolve_inside_the_folder_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("site");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("docs/a b.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();

        let found = |path: &'static str| {
            let root = root.clone();
            async move {
                resolve(&root, path)
                    .await
                    .map(|p| std::fs::read_to_string(p).unwrap())
            }
        };
        assert_eq!(found("/").await.as_deref(), Some("home"));
        assert_eq!(found("/docs/a%20b.txt").await.as_deref(), Some("a"));
        assert_eq!(found("/../secret").await, None);
        assert_eq!(found("/docs/..%2f..%2fsecret").await, None);
        assert_eq!(found("/missing").await, None);
        assert_eq!(found("/docs/%zz").await, None);
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
            assert_eq!(found("/link").await, None);
        }
        assert_eq!(media_type(Path::new("a.HTML")), "text/html; charset=utf-8");
    }
}
