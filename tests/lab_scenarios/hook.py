"""Runs INSIDE the lab guest: libvirtd with vfiodesk's hook hands the GPU pair and the USB
controller to a running VM and takes them back; the VM went through `vm tune` first (libvirt's
own dumpxml, defined back) and kept its meaning. One ``@@ {json}`` line per step."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from vfiodesk.lab.steps.common import VIRSH, driver_of, start_libvirtd, vfiodesk

GPU, AUDIO, USB = "0000:01:00.0", "0000:01:00.1", "0000:02:00.0"
ALL = (GPU, AUDIO, USB)
FAULT = "/run/vfiodesk/test-fault"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=300)


def drivers() -> dict[str, str | None]:
    return {address: driver_of(address) for address in ALL}


def emit(step: str, **data: object) -> None:
    print("@@ " + json.dumps({"step": step, **data}), flush=True)


def create(name: str, *devices: str) -> subprocess.CompletedProcess[str]:
    # The lab's GPU is its only one, so the host's own display: passing it takes --force.
    return vfiodesk("vm", "create", name, "--domain-type", "qemu", "--memory", "256M", "--network", "",
                    "--binding", "vfiodesk", "--force", "--os", "win10", *devices)


def tune(name: str) -> None:
    """`vm tune` on a VM vfiodesk made changes nothing, whatever quotes libvirt writes back."""
    before = run(*VIRSH, "dumpxml", "--inactive", name).stdout
    diff = vfiodesk("vm", "tune", name, "--diff")
    tuned = vfiodesk("vm", "tune", name)
    after = run(*VIRSH, "dumpxml", "--inactive", name).stdout
    emit("tune", tune=tuned.returncode, err=tuned.stderr[-400:], diff=diff.stdout,
         diff_err=diff.stderr[-300:], same=before == after,
         manage=re.findall(r"<vfiodesk:manage[^>]*>", after),
         managed=re.findall(r"managed=['\"](\w+)['\"]", after))


def tmpfs_disk() -> None:
    """A new volume on a tmpfs (no O_DIRECT before Linux 6.6; the disk gets cache='none') is
    refused by vm create, and the volume and the pool made for it are taken back."""
    where = "/tmp/vfdlab-tmpfs"
    os.makedirs(where, exist_ok=True)
    run("mount", "-t", "tmpfs", "tmpfs", where)
    with open(f"{where}/probe", "w"):
        pass
    try:  # the kernel's answer, asked without vfiodesk's probe: the test's oracle
        os.close(os.open(f"{where}/probe", os.O_RDONLY | os.O_DIRECT))
        direct = True
    except OSError:
        direct = False
    os.unlink(f"{where}/probe")
    made = create("vfdlab-tmpfs", "--disk", f"path={where}/w.qcow2,size=16M,format=qcow2")
    emit("tmpfs-disk", direct=direct, rc=made.returncode, err=made.stderr[-400:], left=os.listdir(where),
         pools=run(*VIRSH, "pool-list", "--all", "--name").stdout.split(),
         defined=run(*VIRSH, "domstate", "vfdlab-tmpfs").returncode == 0)


def main() -> None:
    original = drivers()
    # libvirt backs <hugepages/> with a hugetlbfs mount; the lab's /dev has none until asked.
    run("mkdir", "-p", "/dev/hugepages")
    run("mount", "-t", "hugetlbfs", "hugetlbfs", "/dev/hugepages")
    installed = vfiodesk("hook", "install")
    start_libvirtd()  # after the hook exists: libvirtd looks for hooks when it starts
    made = create("vfdlab", "--gpu", "01:00", "--usb-controller", "02:00.0", "--hugepages")
    emit("setup", install=installed.returncode, create=made.returncode, err=made.stderr[-500:],
         original=original)
    tune("vfdlab")
    tmpfs_disk()

    started = run(*VIRSH, "start", "vfdlab")
    time.sleep(2)
    # The device tree, not `info pci`: under nested TCG the firmware has not numbered the
    # root ports' buses yet, so `info pci` cannot show what sits behind them.
    qtree = run(*VIRSH, "qemu-monitor-command", "vfdlab", "--hmp", "info qtree").stdout
    passed = [address for address in ALL if f'host = "{address}"' in qtree]
    emit("start", rc=started.returncode, err=started.stderr[-500:], drivers=drivers(),
         vfio_devices=qtree.count("dev: vfio-pci"), passed=passed)

    destroyed = run(*VIRSH, "destroy", "vfdlab")
    time.sleep(1)
    journal = "/run/vfiodesk/devices"
    emit("destroy", rc=destroyed.returncode, drivers=drivers(),
         journal=sorted(os.listdir(journal)) if os.path.isdir(journal) else [])

    run(*VIRSH, "start", "vfdlab")
    run("pkill", "-x", "libvirtd")
    time.sleep(2)
    start_libvirtd()
    time.sleep(2)
    state = run(*VIRSH, "domstate", "vfdlab").stdout.strip()
    during = drivers()
    run(*VIRSH, "destroy", "vfdlab")
    time.sleep(1)
    emit("reconnect", state=state, during=during, after=drivers())

    os.makedirs("/run/vfiodesk", exist_ok=True)
    with open(FAULT, "w") as handle:
        handle.write(f"fail:{AUDIO}\n")
    failed = run(*VIRSH, "start", "vfdlab")
    time.sleep(1)
    emit("prepare-fails", rc=failed.returncode, err=failed.stderr[-500:], drivers=drivers())

    with open(FAULT, "w") as handle:
        handle.write(f"kill:{AUDIO}\n")
    killed = run(*VIRSH, "start", "vfdlab")
    os.unlink(FAULT)
    mid = drivers()
    restored = vfiodesk("restore", "--all")
    time.sleep(1)
    emit("hook-killed", rc=killed.returncode, err=killed.stderr[-300:], mid=mid,
         restore=restored.stdout[-300:] + restored.stderr[-300:], drivers=drivers())

    run(*VIRSH, "undefine", "vfdlab", "--nvram")
    a = create("vfdlab-gpu", "--gpu", "01:00")
    b = create("vfdlab-usb", "--gpu", "02:00.0")
    first = subprocess.Popen([*VIRSH, "start", "vfdlab-gpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = run(*VIRSH, "start", "vfdlab-usb")
    first.wait(timeout=300)
    time.sleep(1)
    both = drivers()
    run(*VIRSH, "destroy", "vfdlab-gpu")
    run(*VIRSH, "destroy", "vfdlab-usb")
    time.sleep(1)
    emit("two-vms", create=[a.returncode, b.returncode], rc=[first.returncode, second.returncode],
         err=second.stderr[-300:] + a.stderr[-300:] + b.stderr[-300:], both=both, after=drivers())


if __name__ == "__main__":
    main()
