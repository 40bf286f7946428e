//! Cluster membership (SWIM via foca) and the authenticated node transport. Not built yet: see docs/ARCHITECTURE.md.
