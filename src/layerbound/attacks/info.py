"""The evaluation attacks as plain data: what planning and reports need without importing torch.

Every attack comes from one library, torchattacks (see `attacks.py` and docs/attacks.md
for why it is installed with --no-deps). An attack is either run once per budget eps of
its norm's grid (`minimum_norm` False: the attack is told eps) or run once, unbounded, looking
for the smallest perturbation that changes the prediction (`minimum_norm` True: FAB and C&W);
the robust accuracy at each eps then counts the points it found within eps.
"""

from __future__ import annotations

from dataclasses import dataclass

LIBRARY = "torchattacks"
LIBRARY_VERSION = "3.5.1"
PIN = f"{LIBRARY}=={LIBRARY_VERSION}"
# torchattacks 3.5.1 pins requests~=2.25.1 (old, with published advisories) although none of its
# modules imports requests; installed without its dependencies, it keeps the requests Snakemake uses.
INSTALL_COMMAND = f"pip install --no-deps {PIN}"
INSTALL_HINT = f"install torchattacks: {INSTALL_COMMAND}"


@dataclass(frozen=True)
class AttackInfo:
    name: str
    norm: str            # l2 or linf: the ball the attack searches, in pixel space
    minimum_norm: bool   # one unbounded run; robust at eps when the point found lies farther than eps
    label: str           # how tables and figures name it


ATTACKS = {a.name: a for a in (
    AttackInfo("fgsm", "linf", False, "FGSM (linf)"),
    AttackInfo("bim", "linf", False, "BIM / iterative FGSM (linf)"),
    AttackInfo("pgd_linf", "linf", False, "PGD-linf"),
    AttackInfo("pgd_l2", "l2", False, "PGD-l2"),
    AttackInfo("cw_l2", "l2", True, "Carlini-Wagner l2"),
    AttackInfo("fab_l2", "l2", True, "FAB-l2 (minimum norm)"),
    AttackInfo("autoattack_l2", "l2", False, "AutoAttack-l2 (standard)"),
    AttackInfo("autoattack_linf", "linf", False, "AutoAttack-linf (standard)"),
)}
NORMS = ("l2", "linf")
# The table's rows of "any attack": robust only if no attack of that norm broke the example at that eps.
ANY = "any"


def autoattack_of(norm: str) -> str:
    """The AutoAttack of a norm: the headline robust accuracy at a model's training budget."""
    return f"autoattack_{norm}"
