//! What an archive directory holds: segments per timeline, history files, gaps, and how far
//! the archive reaches from a backup's start.
