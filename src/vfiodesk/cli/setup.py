"""`vfiodesk setup`: the seed's story on this host, one guided and resumable command.

Each step runs an existing vfiodesk command in-process (the exact command the plan shows), then
the host is probed again, so a step counts as done only when the host shows it. What setup did
is recorded in /var/lib/vfiodesk/setup.json; `setup undo` takes it back in reverse order.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import click

from vfiodesk import paths as P
from vfiodesk.checks.doctor import run_checks
from vfiodesk.cli.options import (
    connect_option,
    dry_run_option,
    emit_json,
    host_paths,
    json_option,
    root_option,
)
from vfiodesk.desktop.prime import query_prime_profile
from vfiodesk.errors import ExitStatus, InputError, RefusedError, VfiodeskError
from vfiodesk.host.facts import read_host_facts
from vfiodesk.host.setup_facts import hook_installed, read_boot_id, systemd_running
from vfiodesk.hostfiles.atomic import remove, write_atomic
from vfiodesk.hostfiles.journal import read_changes
from vfiodesk.hostfiles.setup_state import SetupState, read_setup_state, save_setup_state
from vfiodesk.plan.profile import read_profile
from vfiodesk.plan.setup import (
    BINDING_MODES,
    INPUT_MODES,
    Answers,
    Applied,
    SetupFacts,
    SetupStep,
    StepStatus,
    choose_gpu,
    input_config,
    msi_script_file,
    next_step,
    plan_setup,
)
from vfiodesk.runner import CommandRunner

_PATH_ANSWERS = ("iso", "virtio_iso")
_STYLE = {StepStatus.DONE: "green", StepStatus.TODO: "yellow", StepStatus.BLOCKED: "bold red",
          StepStatus.SKIPPED: "dim"}


def _answer_options(function: Any) -> Any:
    options = [
        click.option("--profile", type=click.Path(path_type=Path),
                     help="TOML file with the answers (keys as these options: gpu = \"01:00\")."),
        click.option("--name", help="The VM's name [default: win10]."),
        click.option("--gpu", help="The GPU to pass (01:00 = every function of the card)."),
        click.option("--usb-controller", help="A USB controller to pass too."),
        click.option("--memory", help="The VM's RAM [default: 8G]."),
        click.option("--cpus", type=int, help="vCPUs (default: see vfiodesk cpus)."),
        click.option("--disk", help="As vm create: POOL/VOL,size=80G,format=qcow2, or a PATH."),
        click.option("--iso", help="The Windows installer ISO (relative to the current directory)."),
        click.option("--virtio-iso", help="The virtio-win drivers ISO."),
        click.option("--binding", type=click.Choice(sorted(BINDING_MODES)),
                     help="Who binds the GPU (default: vfiodesk for NVIDIA, libvirt otherwise)."),
        click.option("--network", help="As vm create: a libvirt network or macvtap:IFACE."),
        click.option("--domain-type", type=click.Choice(["kvm", "qemu"])),
        click.option("--os", "os_version", type=click.Choice(["win11", "win10"]),
                     help="As vm create: win11 (default) adds a TPM and Secure Boot, win10 neither."),
        click.option("--passthrough-mode", is_flag=True, default=None, help="Add iommu=pt too."),
        click.option("--input", "input_mode", type=click.Choice(INPUT_MODES),
                     help="Keyboard/mouse sharing [default: synergy]."),
        click.option("--windows-installed", is_flag=True, default=None,
                     help="Windows is installed in the VM: go on with the post-install steps."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.group(invoke_without_command=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask: answers come from options, --profile "
                                                "or the last run; apply every step that can run.")
@_answer_options
@dry_run_option
@json_option
@connect_option
@root_option
@click.pass_context
def setup(ctx: click.Context, /, yes: bool, profile: Path | None, dry_run: bool, as_json: bool,
          uri: str | None, root: str | None, **options: Any) -> int:
    """Walk the whole story on this host: check, IOMMU on, reboot, GPU, VM, Windows, desktop.

    Run it again after the reboot (or after installing Windows): it checks what took effect
    and goes on. `setup status` shows every step; `setup undo` takes back what setup did."""
    if ctx.invoked_subcommand is not None:
        return 0
    host = host_paths(root)
    state = read_setup_state(host)
    answers = _answers(state, profile, options)
    interactive = not yes and not dry_run and not as_json
    if interactive and not sys.stdin.isatty():
        raise InputError("setup needs a terminal to ask its questions",
                         "give the answers as options (or --profile) with --yes, or look: --dry-run")
    facts = read_setup_facts(host, state, uri)
    if interactive:
        answers = _ask(facts, answers)
    if dry_run:
        _show(plan_setup(facts, answers, root=root, connect=uri), as_json)
        return 0
    state.answers = answers.to_json()
    save_setup_state(host, state)
    out = sys.stderr if as_json else sys.stdout
    with contextlib.redirect_stdout(out):
        status = _walk(host, state, answers, root, uri, confirm=interactive)
    if as_json:
        _show(plan_setup(read_setup_facts(host, state, uri), answers, root=root, connect=uri), True)
    return status


@setup.command()
@json_option
@connect_option
@root_option
def status(as_json: bool, uri: str | None, root: str | None) -> None:
    """Every step: done, todo, blocked (why) or skipped, and the next action."""
    host = host_paths(root)
    state = read_setup_state(host)
    answers = _answers(state, None, {})
    _show(plan_setup(read_setup_facts(host, state, uri), answers, root=root, connect=uri), as_json)


@setup.command()
@dry_run_option
@connect_option
@root_option
def undo(dry_run: bool, uri: str | None, root: str | None) -> None:
    """Take back what setup did, newest first, through the same journals as the commands."""
    host = host_paths(root)
    state = read_setup_state(host)
    pending = [record for record in state.applied if not record.undone]
    if not pending:
        click.echo("setup has done nothing that is not undone yet.")
        return
    for record in reversed(pending):
        what = _undo_one(host, record, root, uri, dry_run)
        click.echo(f"{'would undo' if dry_run else 'undid'} {record.step}: {what}")
        if not dry_run:
            state.applied[state.applied.index(record)] = replace(record, undone=True)
            save_setup_state(host, state)  # after each step: an interrupted undo resumes
    if not dry_run:
        click.echo("Reboot if the kernel command line or vfio-early were undone.")


def read_setup_facts(host: P.HostPaths, state: SetupState, uri: str | None) -> SetupFacts:
    facts = read_host_facts(host, user=os.environ.get("SUDO_USER"))
    facts.prime_profile = query_prime_profile(host, CommandRunner(host))
    evidence = next((line.strip() for line in facts.iommu_log or () if any(
        mark in line for mark in ("IOMMU enabled", "AMD-Vi: Interrupt remapping", "Found IOMMU"))), None)
    cpu = facts.cpu
    vendor = "unknown" if cpu is None else "intel" if cpu.is_intel else "amd" if cpu.is_amd else "unknown"
    defined, error = _domain_defined(state, uri)
    return SetupFacts(
        findings=run_checks(facts), devices=facts.devices or [], iommu_groups=len(facts.iommu_groups),
        iommu_evidence=evidence, cpu_vendor=vendor, boot_id=read_boot_id(host), cmdline=facts.cmdline,
        prime=facts.prime_profile, hook_installed=hook_installed(host),
        systemd=systemd_running(host), domain_defined=defined, libvirt_error=error,
        applied=state.active())


def _domain_defined(state: SetupState, uri: str | None) -> tuple[bool | None, str]:
    from vfiodesk import virt

    name = str(state.answers.get("name", Answers.name))
    try:
        with virt.connection(uri) as conn:
            return virt.domain_exists(conn, name), ""
    except VfiodeskError as exc:
        return None, exc.message


def _answers(state: SetupState, profile: Path | None, options: dict[str, Any]) -> Answers:
    """The last run's answers, then the profile's, then the options' (each wins over the one before)."""
    known = {f.name for f in fields(Answers)}
    values: dict[str, Any] = {k: v for k, v in state.answers.items() if k in known}
    if profile is not None:
        values.update(read_profile(profile, Answers))
    options = dict(options)
    options["input"] = options.pop("input_mode", None)
    options["os"] = options.pop("os_version", None)
    values.update({key: value for key, value in options.items() if value is not None})
    for key in _PATH_ANSWERS:
        if values.get(key):
            values[key] = os.path.abspath(os.path.expanduser(values[key]))
    answers = Answers(**values)
    answers.validate()
    return answers


def _ask(facts: SetupFacts, answers: Answers) -> Answers:
    """Rich prompts for what the options left open; candidates come from the probed host."""
    from rich.prompt import Prompt

    out = _console()
    gpus = [d for d in facts.devices if d.is_display]
    if answers.gpu is None and gpus and choose_gpu(facts.devices, None).device is None:
        for device in gpus:
            out.print(f"  {device.address}  {device.ids}  group {device.iommu_group}"
                      f"{'  (boot display)' if device.boot_vga else ''}")
        answers = replace(answers, gpu=Prompt.ask("Which GPU goes to the VM",
                                                  choices=[str(d.address) for d in gpus]))
    if answers.usb_controller is None:
        usb = [str(d.address) for d in facts.devices if d.is_usb_controller]
        if usb:
            picked = Prompt.ask("Pass a USB controller too (its ports become the VM's)",
                                choices=[*usb, "none"], default="none")
            answers = replace(answers, usb_controller=None if picked == "none" else picked)
    answers = replace(answers, memory=Prompt.ask("Memory for the VM", default=answers.memory))
    if answers.iso is None:
        answers = replace(answers, iso=_ask_path("Windows installer ISO"))
    if answers.virtio_iso is None:
        answers = replace(answers, virtio_iso=_ask_path("virtio-win drivers ISO"))
    if answers.binding is None:
        for mode, explanation in BINDING_MODES.items():
            out.print(f"  [bold]{mode}[/]: {explanation}")
        gpu = choose_gpu(facts.devices, answers.gpu).device
        default = "vfiodesk" if gpu is not None and gpu.vendor_id == 0x10DE else "libvirt"
        answers = replace(answers, binding=Prompt.ask("Who binds the GPU", choices=list(BINDING_MODES),
                                                      default=default))
    answers.validate()
    return answers


def _ask_path(question: str) -> str | None:
    from rich.prompt import Prompt

    path = Prompt.ask(f"{question} (a path; empty: later)", default="")
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _walk(host: P.HostPaths, state: SetupState, answers: Answers, root: str | None, uri: str | None,
          *, confirm: bool) -> int:
    """Run the next step until one is blocked, needs the user (reboot, Windows), or all are done."""
    last: SetupStep | None = None
    while True:
        steps = plan_setup(read_setup_facts(host, state, uri), answers, root=root, connect=uri)
        step = next_step(steps)
        if step is None:
            click.echo("Setup is complete.")
            return int(ExitStatus.OK)
        if last is not None and step.id == last.id:
            raise VfiodeskError(f"step {step.id!r} ran but the host does not show it done: {step.summary}",
                                "see the output above; `vfiodesk setup status` shows every step")
        if step.status is StepStatus.BLOCKED:
            click.echo(f"blocked at {step.id} ({step.title}): {step.summary}")
            return int(ExitStatus.HOST_NOT_READY)
        if not step.automatic:
            click.echo(f"next: {step.title}: {step.summary}")
            return int(ExitStatus.OK)
        click.echo(f"== {step.title}: {step.summary}")
        if step.command:
            click.echo(f"   $ {shlex.join(step.command)}")
        if confirm:
            from rich.prompt import Confirm

            if not Confirm.ask("Run it"):
                click.echo("Stopped; run vfiodesk setup again to go on.")
                return int(ExitStatus.OK)
        record = _run_step(host, step, answers, root)
        state.applied.append(replace(record, boot_id=read_boot_id(host)))
        save_setup_state(host, state)
        last = step


def _run_step(host: P.HostPaths, step: SetupStep, answers: Answers, root: str | None) -> Applied:
    assert step.command is not None
    if step.command[0] != "vfiodesk":  # prime-select
        runner = CommandRunner(host)
        previous = query_prime_profile(host, runner)
        runner.run(step.command)
        return Applied(step.id, previous=previous)
    before = {record.id for record in read_changes(host)}
    if step.id == "msi":
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            _vfiodesk(step.command)
        target = msi_script_file(root, answers)
        write_atomic(Path(target), text.getvalue().encode(), target)
        click.echo(f"wrote {target}")
        return Applied(step.id, file=target)
    if step.id == "input":
        Path(input_config(root, answers)).parent.mkdir(parents=True, exist_ok=True)
    _vfiodesk(step.command)
    change = next((record.id for record in read_changes(host) if record.id not in before), None)
    if change is None and step.command[1] == "host":
        raise VfiodeskError(f"step {step.id!r} changed nothing, so a reboot would not help",
                            "see its output above; vfiodesk doctor tells what is missing")
    return Applied(step.id, change=change, name=answers.name if step.id == "vm" else None,
                   file=input_config(root, answers) if step.id == "input" else None)


def _vfiodesk(command: tuple[str, ...]) -> None:
    """Run a vfiodesk command in this process, as typed (errors propagate with their hint)."""
    from vfiodesk.cli.main import cli

    cli.main(args=list(command[1:]), prog_name="vfiodesk", standalone_mode=False)


def _undo_one(host: P.HostPaths, record: Applied, root: str | None, uri: str | None, dry_run: bool) -> str:
    root_args = ["--root", root] if root else []
    if record.change:
        if not dry_run:
            _vfiodesk(("vfiodesk", "host", "undo", record.change, *root_args))
        return f"host change {record.change}"
    if record.step == "prime":
        previous = {"nvidia": "nvidia", "on-demand": "on-demand"}.get(record.previous or "", "intel")
        CommandRunner(host, dry_run=dry_run).run(["prime-select", previous])
        return f"prime-select {previous}"
    if record.step == "hook":
        if not dry_run:
            _vfiodesk(("vfiodesk", "hook", "uninstall", *root_args))
        return "hook uninstalled"
    if record.step == "vm" and record.name:
        if not dry_run:
            _undefine(record.name, uri)
        return f"domain {record.name} undefined (its disk is kept)"
    if record.file:
        if not dry_run and os.path.exists(record.file):
            remove(Path(record.file), record.file)
        return f"removed {record.file}"
    return "nothing to take back"


def _undefine(name: str, uri: str | None) -> None:
    from vfiodesk import virt

    with virt.connection(uri) as conn:
        if virt.domain_exists(conn, name) and virt.domain_is_active(conn, name):
            raise RefusedError(f"{name} is running", f"shut it down first: vfiodesk down {name}")
        virt.undefine_domain(conn, name)


def _show(steps: list[SetupStep], as_json: bool) -> None:
    upcoming = next_step(steps)
    if as_json:
        emit_json({"steps": [step.to_json() for step in steps], "next": upcoming.id if upcoming else None})
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("step", "status", "summary", "command"):
        table.add_column(column)
    for step in steps:
        table.add_row(step.id, f"[{_STYLE[step.status]}]{step.status.value}[/]", step.summary,
                      shlex.join(step.command) if step.command else "")
    out = _console()
    out.print(table)
    out.print(f"next: {upcoming.id}: {upcoming.summary}" if upcoming else "[green]Setup is complete.[/]")


def _console() -> Any:
    from vfiodesk.cli.options import console

    return console()
