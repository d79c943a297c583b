//! Printer simulators: each listens on TCP like a network printer, decodes the printer language
//! it receives back into a bitmap, and answers status queries the way the real printer does.
