//! The Tidepool lab: Proxmox, Kubernetes and Talos emulators wired into one simulated home lab.
