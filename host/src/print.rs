//! From a print file to a plugin's print job: choose how the printer takes the file, render it
//! at the printer's resolution when it takes raster, and check what can be checked before any
//! byte reaches the device.

use devicehub_plugin_api::{
    abi_stable::std_types::{ROption, RVec},
    InputKind, PrintInput, PrintJob, PrinterProfile, RasterPage, Setting,
};

use crate::render::{
    self, Halftone, InputFormat, Placement, RenderOptions, RenderTarget, Rotation,
};

/// The format of a print file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// An image or PDF rendered by the host (or passed through to PDF printers).
    Render(InputFormat),
    /// Bytes already in the printer's language.
    Raw,
}

impl FileFormat {
    /// Parses a format name as used on the command line and in job documents.
    pub fn parse(name: &str) -> Option<FileFormat> {
        Some(match name.to_ascii_lowercase().as_str() {
            "gif" => FileFormat::Render(InputFormat::Gif),
            "png" => FileFormat::Render(InputFormat::Png),
            "jpeg" | "jpg" => FileFormat::Render(InputFormat::Jpeg),
            "pdf" => FileFormat::Render(InputFormat::Pdf),
            "raw" => FileFormat::Raw,
            _ => return None,
        })
    }
}

/// How to print a file.
#[derive(Debug, Clone)]
pub struct PrintOptions {
    pub job_id: String,
    pub copies: u32,
    /// The file's format; sniffed from its first bytes when not given.
    pub format: Option<FileFormat>,
    pub halftone: Halftone,
    pub rotation: Rotation,
    /// Per-job settings for the plugin.
    pub settings: Vec<Setting>,
}

impl Default for PrintOptions {
    fn default() -> Self {
        PrintOptions {
            job_id: "local".to_string(),
            copies: 1,
            format: None,
            halftone: Halftone::default(),
            rotation: Rotation::default(),
            settings: Vec::new(),
        }
    }
}

/// Why a file cannot be turned into a print job.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error(
        "the file is not a GIF, PNG, JPEG or PDF (say `--format raw` for printer-language files)"
    )]
    UnknownFormat,
    #[error("copies must be between 1 and {max}, not {copies}")]
    Copies { copies: u32, max: u32 },
    #[error("this printer ({language}) does not take {what}")]
    NotAccepted {
        language: String,
        what: &'static str,
    },
    #[error("cannot render the file: {0}")]
    Render(#[from] render::RenderError),
}

/// The most copies one job may ask for; a typo of 10000 labels wastes a roll.
pub const MAX_COPIES: u32 = 999;

/// A job ready for a plugin, and how each page was placed.
#[derive(Debug, Clone)]
pub struct PreparedJob {
    pub job: PrintJob,
    pub placements: Vec<Placement>,
}

/// Prepares `file` for a printer with `profile`.
pub fn prepare_job(
    file: &[u8],
    profile: &PrinterProfile,
    options: &PrintOptions,
) -> Result<PreparedJob, PrintError> {
    if options.copies == 0 || options.copies > MAX_COPIES {
        return Err(PrintError::Copies {
            copies: options.copies,
            max: MAX_COPIES,
        });
    }
    let format = match options.format {
        Some(format) => format,
        None => InputFormat::sniff(file)
            .map(FileFormat::Render)
            .ok_or(PrintError::UnknownFormat)?,
    };
    let accepts = |kind: InputKind| profile.inputs.contains(&kind);
    let not_accepted = |what| PrintError::NotAccepted {
        language: profile.language.to_string(),
        what,
    };
    let (input, placements) = match format {
        FileFormat::Raw if accepts(InputKind::Raw) => {
            (PrintInput::Raw(RVec::from(file.to_vec())), Vec::new())
        }
        FileFormat::Raw => return Err(not_accepted("raw printer-language files")),
        FileFormat::Render(InputFormat::Pdf) if accepts(InputKind::Pdf) => {
            (PrintInput::Pdf(RVec::from(file.to_vec())), Vec::new())
        }
        FileFormat::Render(format) if accepts(InputKind::Raster) => {
            let target = RenderTarget {
                dpi: profile.dpi,
                width_dots: profile.width_dots,
                max_length_dots: Some(profile.max_length_dots).filter(|&l| l > 0),
            };
            let mut render_options = RenderOptions::for_target(target);
            render_options.halftone = options.halftone;
            render_options.rotation = options.rotation;
            let pages = render::render(file, format, &render_options)?;
            let placements = pages.iter().map(|p| p.placement).collect();
            let pages = pages
                .into_iter()
                .map(|p| RasterPage {
                    width: p.bitmap.width,
                    height: p.bitmap.height,
                    data: RVec::from(p.bitmap.data),
                })
                .collect::<Vec<_>>();
            (PrintInput::Raster(RVec::from(pages)), placements)
        }
        FileFormat::Render(_) => return Err(not_accepted("images")),
    };
    Ok(PreparedJob {
        job: PrintJob {
            job_id: options.job_id.as_str().into(),
            input,
            copies: options.copies,
            media: ROption::RNone,
            settings: RVec::from(options.settings.clone()),
        },
        placements,
    })
}
