"""Runs INSIDE the lab guest: a VM made by `vm create --binding vfiodesk --hugepages` goes
through `vm tune` (libvirt's own dumpxml, defined back) and still starts with the GPU bound by
the hook. One ``@@ {json}`` line per step."""

from __future__ import annotations

import json
import re
import subprocess
import time

from vfiodesk.lab.steps.common import VIRSH, driver_of, start_libvirtd, vfiodesk

GPU, AUDIO = "0000:01:00.0", "0000:01:00.1"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=300)


def emit(step: str, **data: object) -> None:
    print("@@ " + json.dumps({"step": step, **data}), flush=True)


def main() -> None:
    original = {address: driver_of(address) for address in (GPU, AUDIO)}
    # libvirt backs <hugepages/> with a hugetlbfs mount; the lab's /dev has none until asked.
    run("mkdir", "-p", "/dev/hugepages")
    run("mount", "-t", "hugetlbfs", "hugetlbfs", "/dev/hugepages")
    vfiodesk("hook", "install")
    start_libvirtd()
    # The lab's GPU is its only one, so the host's own display: passing it takes --force.
    made = vfiodesk("vm", "create", "vfdtune", "--domain-type", "qemu", "--memory", "256M", "--network", "",
                    "--binding", "vfiodesk", "--hugepages", "--force", "--gpu", "01:00",
                    "--os", "win10")
    before = run(*VIRSH, "dumpxml", "--inactive", "vfdtune").stdout
    diff = vfiodesk("vm", "tune", "vfdtune", "--diff")
    tuned = vfiodesk("vm", "tune", "vfdtune")
    after = run(*VIRSH, "dumpxml", "--inactive", "vfdtune").stdout
    emit("tune", create=made.returncode, tune=tuned.returncode, err=made.stderr[-400:] + tuned.stderr[-400:],
         diff=diff.stdout, diff_err=diff.stderr[-300:], same=before == after,
         manage=re.findall(r"<vfiodesk:manage[^>]*>", after),
         managed=re.findall(r"managed=['\"](\w+)['\"]", after))
    started = run(*VIRSH, "start", "vfdtune")
    time.sleep(2)
    during = {address: driver_of(address) for address in (GPU, AUDIO)}
    run(*VIRSH, "destroy", "vfdtune")
    time.sleep(1)
    emit("start", rc=started.returncode, err=started.stderr[-500:], during=during, original=original,
         after={address: driver_of(address) for address in (GPU, AUDIO)})


if __name__ == "__main__":
    main()
