//! deadbolt-sim: whole deadbolt clusters under seeded faults in madsim.
//! Only meaningful when built with `--cfg madsim` (`cargo sim`); work in
//! progress, see ARCHITECTURE.md.
