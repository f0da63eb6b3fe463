"""The libvirt qemu hook (libvirt.org/hooks.html): hostdevs go to vfio-pci at prepare and come
back at release. It never calls libvirt (a deadlock, the docs warn) and never imports the CLI."""
