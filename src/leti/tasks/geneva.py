"""Event argument extraction as code: GENEVA (`--task geneva`) and any OneIE file (`eae-jsonl:`).

Source:   GENEVA, github.com/PlusLabNLP/GENEVA at commit 559e21e; the ontology, the 1200-instance
          low-resource training split (seed 160), val and test ship in leti/data/geneva/. That
          training file repeats 547 val and test mentions and val repeats 20 test ones; the task
          takes them out of the earlier split (train 653, val 1422, test 1893 problems).
Licence:  CC BY 3.0 (derived from FrameNet, also CC BY 3.0; cite both, see NOTICE).
Citation: Parekh, Hsu, Huang, Chang, Peng. "GENEVA: Benchmarking Generalizability for Event
          Argument Extraction with Hundreds of Event Types and Argument Roles." ACL 2023.

The task follows the spec's "EAE as code" section (Code4Struct prompts, LeTI verifier feedback):
one problem per event mention; the ontology becomes Python classes (leti/tasks/eae/ontology.py);
the model completes `event = Cls(`; the sandbox only reports the event's arguments, and `judge`
compares them with the gold on the host (leti/tasks/eae/judge.py: the gold never enters the
sandbox, so no program can fake a pass); Arg-I / Arg-C scores come from `extra_metrics`
(leti/tasks/eae/metrics.py), from the arguments each verdict was decided on.

Task specs (the part after ':' is comma-separated):
    geneva                      default: passed = exact argument match
    geneva:min_f1=0.5           passed = Arg-C F1 of the sample >= 0.5
    eae-jsonl:PATH              one OneIE file as split "test", ontology derived from the data
    eae-jsonl:train=A,test=B,ontology=ONT.json,min_f1=1.0
Without ontology=, the classes' roles are those that occur in all the files named together, so
a problem's prompt depends on which files are named with it: give ontology= for prompts (and
scores) that compare across specs.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from leti.errors import LetiError
from leti.tasks.base import EvalDefaults, Problem, Task, absolute_path
from leti.tasks.eae.data import EventMention, read_oneie
from leti.tasks.eae.judge import judge_result, reported_arguments
from leti.tasks.eae.metrics import ArgCounts, parse_prediction
from leti.tasks.eae.ontology import EventType, load_ontology, parse_ontology
from leti.tasks.eae.problems import STOP_SEQUENCES, STOP_SUMMARY, make_problem
from leti.tasks.registry import register_task

if TYPE_CHECKING:
    from leti.evaluation.samples import Sample
    from leti.execution.config import ExecutionConfig
    from leti.execution.records import ExecutionResult, Program

CITATION = """@inproceedings{parekh2023geneva,
  title={GENEVA: Benchmarking Generalizability for Event Argument Extraction with Hundreds of
         Event Types and Argument Roles},
  author={Parekh, Tanmay and Hsu, I-Hung and Huang, Kuan-Hao and Chang, Kai-Wei and Peng, Nanyun},
  booktitle={Proceedings of ACL},
  year={2023}
}
@inproceedings{baker1998framenet,
  title={The Berkeley FrameNet Project},
  author={Baker, Collin F. and Fillmore, Charles J. and Lowe, John B.},
  booktitle={Proceedings of COLING-ACL},
  year={1998}
}"""

GENEVA_SPLITS = {"train": "train-lr1200-s160.json", "val": "val.json", "test": "test.json"}

# One greedy prediction per mention, the usual EAE protocol; an argument line is short.
EAE_EVAL = EvalDefaults(split="test", n=1, temperatures=(0.0,), top_p=1.0, max_new_tokens=256, ks=(1,))


def _min_f1(value: str, spec: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = -1.0
    if not 0.0 <= f <= 1.0:
        raise LetiError(f"task spec {spec!r}: min_f1 must be a number in [0, 1], got {value!r}")
    return f


class EaeTask(Task):
    """Shared machinery; subclasses say where the files and the ontology come from."""

    stop_sequences = STOP_SEQUENCES
    stop_summary = STOP_SUMMARY
    eval_defaults = EAE_EVAL
    # extra_metrics' scores are percentages; several temperatures' "best" takes them at Arg-C F1's
    metric_units = MappingProxyType({f"arg_{a}_{m}": "%" for a in "ic" for m in ("precision", "recall", "f1")})
    primary_metric = "arg_c_f1"

    def __init__(self, files: dict[str, Path], ontology: Path | None, min_f1: float, prefix: str) -> None:
        self.files = files
        self.ontology_path = ontology
        self.min_f1 = min_f1
        self.prefix = prefix

    def ontology(self, mentions: list[EventMention]) -> dict[str, EventType]:
        if self.ontology_path is not None:
            return load_ontology(self.ontology_path)
        # No ontology given: the event types and roles that occur in the data, undocumented.
        derived: dict[str, dict[str, list[str]]] = {}
        for m in mentions:
            roles = derived.setdefault(m.event_type, {"arguments": []})["arguments"]
            roles.extend(a.role for a in m.arguments if a.role not in roles)
        return parse_ontology(derived, "", f"ontology derived from {', '.join(map(str, self.files.values()))}")

    def mentions(self) -> dict[str, list[EventMention]]:
        """The event mentions of each split, as the files hold them."""
        return {split: read_oneie(path) for split, path in self.files.items()}

    def data_digest(self) -> str:
        """A digest of every file the problems and their gold come from (data and ontology).

        It goes into each problem's tests (`render_tests`), because `leti evaluate` resumes by
        the text of program and tests, and the gold no longer is in the tests (the host judges):
        without it, a corrected gold kept the old verdicts. One digest for all files, not one per
        mention: the tests run next to the model's code, and a hash of one mention's gold could be
        inverted there by trying the sentence's spans. So an edit anywhere in the files makes every
        recorded program another one (a resumed `leti evaluate` refuses the old --out)."""
        digest = hashlib.sha256()
        named = [(split, path) for split, path in self.files.items()] + [("ontology", self.ontology_path)]
        for name, path in named:
            if path is None:
                continue
            try:
                content = path.read_bytes()
            except OSError as e:
                raise LetiError(f"{path}: cannot read the {name} file ({e.strerror}); check the task spec's paths") from None
            digest.update(f"{name}\0{len(content)}\0".encode())
            digest.update(content)
        return digest.hexdigest()[:16]

    def load_problems(self) -> list[Problem]:
        by_split = self.mentions()
        ontology = self.ontology([m for ms in by_split.values() for m in ms])
        data = self.data_digest()
        return [
            make_problem(m, ontology, split, self.prefix, self.min_f1, data)
            for split, mentions in by_split.items()
            for m in mentions
        ]

    def judge(self, problem: Problem, program: Program, result: ExecutionResult,
              config: ExecutionConfig | None = None) -> ExecutionResult:
        """Pass/fail and feedback from the reported arguments and the gold, on the host."""
        return judge_result(problem, program, result, config)

    def extra_metrics(
        self,
        problems: list[Problem],
        samples: list[Sample],
        results: list[ExecutionResult],
    ) -> dict[str, float]:
        """Arg-I / Arg-C precision, recall, F1 (percent) over all samples of `problems`. As the
        authors score EAE (by execution): a sample's arguments are those its verdict was decided
        on (the final `event` the sandbox reported, `judge.reported_arguments`), so scores and
        verdict describe the same event; a sample whose program failed before the verifier saw
        its event (its own exception, e.g. the TypeError of an unknown role; a timeout, a crash,
        an exit, a tampered report) predicts nothing. A sample without a result (none given) is
        read from the completion's literal lists, unexecuted (metrics.py)."""
        by_id = {p.id: p for p in problems}
        counts = ArgCounts()
        for i, sample in enumerate(samples):
            problem = by_id.get(sample.problem_id)
            if problem is None:
                continue
            result = results[i] if i < len(results) else None
            if result is None:
                call_prefix = problem.prompt.rsplit("\n", 1)[-1]
                pred = parse_prediction(call_prefix, sample.completion) or {}
            else:
                pred = reported_arguments(result) or {}
            counts.add(pred, problem.meta["gold"])
        return counts.scores()


@register_task("geneva")
class GenevaTask(EaeTask):
    description = "GENEVA event argument extraction as code (179 event types; splits train/val/test)"
    source = "github.com/PlusLabNLP/GENEVA @559e21e, shipped in leti/data/geneva"
    license = "CC BY 3.0"
    citation = CITATION

    def __init__(self, options: str = "", *, min_f1: float | None = None, data_dir: Path | None = None) -> None:
        spec_min_f1 = 1.0
        for item in filter(None, options.split(",")):
            key, _, value = item.partition("=")
            if key != "min_f1":
                raise LetiError(f"task spec 'geneva:{options}': unknown option {key!r}; the only one is min_f1=F")
            spec_min_f1 = _min_f1(value, f"geneva:{options}")
        root = data_dir or Path(str(resources.files("leti") / "data" / "geneva"))
        files = {split: root / name for split, name in GENEVA_SPLITS.items()}
        super().__init__(files, root / "event_ontology.json", spec_min_f1 if min_f1 is None else min_f1, "geneva")
        self.name = f"geneva:{options}" if options else "geneva"

    def mentions(self) -> dict[str, list[EventMention]]:
        """GENEVA's files, with the mentions that are also in a later split (train < val < test)
        taken out of the earlier one. The upstream low-resource training file holds 335 of the
        1893 test mentions and 217 of the 1442 val ones (same id, sentence, trigger and gold), and
        one test mention under another frame label (Know for the test's Coming_to_believe, same
        sentence, trigger and spans): trained on, their prompts and gold-derived rewards would be
        the test's own."""
        by_split = super().mentions()
        held_out: set = set()
        for split in ("test", "val", "train"):
            by_split[split] = [m for m in by_split[split] if not ({m.id, _mention_key(m)} & held_out)]
            held_out |= {k for m in by_split[split] for k in (m.id, _mention_key(m))}
        return by_split


def _mention_key(m: EventMention) -> tuple:
    """What makes two mentions one instance: the sentence and the trigger, whatever the event type
    (another frame label on the same trigger still has the same argument spans as gold)."""
    return (m.tokens, m.trigger_start, m.trigger_end, m.trigger)


@register_task("eae-jsonl")
class EaeJsonlTask(EaeTask):
    description = "event argument extraction on your OneIE-format files: eae-jsonl:[SPLIT=]PATH,...,ontology=ONT.json"
    source = "user-supplied OneIE JSON lines (e.g. a licensed ACE05 copy)"
    license = "as stated by the data's owner"
    citation = ""

    @classmethod
    def absolute_argument(cls, arg: str) -> str:
        """Each file's path absolute (split=PATH, ontology=PATH or a bare PATH); min_f1 as it is."""
        items = []
        for item in arg.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                items.append(absolute_path(item) if item else item)
            else:
                items.append(item if key == "min_f1" else f"{key}={absolute_path(value)}")
        return ",".join(items)

    def __init__(self, spec: str) -> None:
        files: dict[str, Path] = {}
        ontology: Path | None = None
        min_f1 = 1.0
        for item in filter(None, spec.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                key, value = "test", item
            if not key.strip() or not value.strip():
                raise LetiError(f"task spec 'eae-jsonl:{spec}': {item!r} needs a name and a path, e.g. test=PATH or ontology=PATH")
            if key == "ontology":
                ontology = Path(value).expanduser()  # the shell leaves ~ alone inside a spec
            elif key == "min_f1":
                min_f1 = _min_f1(value, f"eae-jsonl:{spec}")
            elif key in files:
                raise LetiError(f"task spec 'eae-jsonl:{spec}': split {key!r} is given twice")
            else:
                files[key] = Path(value).expanduser()
        if not files:
            raise LetiError(f"task spec 'eae-jsonl:{spec}': name at least one data file, e.g. eae-jsonl:test=PATH")
        super().__init__(files, ontology, min_f1, "eae")
        self.name = f"eae-jsonl:{spec}"
