"""The lab: a throwaway kernel under QEMU with an emulated IOMMU, where vfiodesk runs for real."""
