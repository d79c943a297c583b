//! Rendering print inputs (GIF, PNG, JPEG, PDF) into 1-bit bitmaps at a printer's resolution.
