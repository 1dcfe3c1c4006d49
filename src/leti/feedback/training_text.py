"""Execution result -> the text LeTI trains on (pure: no torch, no tokenizer).

Layout, byte for byte (spec, "One iteration", step 4):

    passed:  <|good|>PROMPTCOMPLETION[EOS]
    failed:  <|bad|><|lang_feedback|>FEEDBACK<|/lang_feedback|>PROMPTCOMPLETION[EOS]

Separators, decided here once:
- No whitespace between a special token and what follows it. The four markers are added to the
  tokenizer as atomic special tokens, so they need no separator to tokenise cleanly, and at test
  time the model is prompted with exactly `<|good|>` + PROMPT; training on `<|good|>PROMPT` keeps
  the token sequence of the conditioning identical to what the model saw in training.
- FEEDBACK is the executor's feedback text with trailing whitespace removed (so the closing
  marker sits right after the last character of the message), plus rule-based hints when
  `postprocess_hints` is on, each on its own line.
- PROMPT + COMPLETION are concatenated as the model saw and wrote them (the prompt ends with its
  own newline), so the training text continues the exact byte stream of generation.
- EOS (the tokenizer's end-of-text string) only when `append_eos`: the authors append none.
- A marker spelled out in the completion or the feedback (a program that writes the string
  '<|/lang_feedback|>', or a traceback quoting that line) gets a zero-width space after its `<|`:
  tokenized as it stands, each copy became the marker's own token, closing the span early or
  putting a reward token inside code. The sampler never draws the markers' tokens, so this
  touches only text the model spelled out character by character. The tokenizer's own special
  tokens spelled out anywhere (a prompt's "<s>" tag, a printed "<|endoftext|>", the stop hint's
  end-of-text string) are read as text where the text is tokenized (leti.model.spelled_as_text);
  only the EOS of append_eos, which ends the text, is the token.

With `stop_hint` (the authors' post-processing ablation) a sample the loop cut at the stop
sequences after sampling gets the authors' sentence about the cut-off code as the last line of its
span, and a passing one gets a span holding only that sentence:
`<|good|><|lang_feedback|>HINT<|/lang_feedback|>PROMPTCOMPLETION`.

Ablations: `textual_feedback=False` drops the feedback span (binary reward only);
`reward_token=False` drops the reward token (feedback span, if on, still marks failures).
Controls (not in the paper): `feedback_content="constant"` keeps the span but fills every one
with the same sentence, which separates what the feedback says from the mere fact that failures
then no longer share the layout of the `<|good|>`-conditioned prompt; `keep_failures=False`
trains on passing samples only (filtered self-training, the strongest use of a binary signal).
Both exist because the demo's tiny model gains about as much from a constant span as from the
traceback (src/leti/demo/__init__.py).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Literal

from leti.execution.records import ExecutionResult, Status

GOOD = "<|good|>"
BAD = "<|bad|>"
FEEDBACK_OPEN = "<|lang_feedback|>"
FEEDBACK_CLOSE = "<|/lang_feedback|>"
CONSTANT_FEEDBACK = "The program failed."  # feedback_content="constant": no information at all
MARKERS = (GOOD, BAD, FEEDBACK_OPEN, FEEDBACK_CLOSE)


def inert(text: str) -> str:
    """`text` with each marker spelled out in it broken by a zero-width space, so that the
    tokenizer reads it as ordinary text, not as the marker (module docstring)."""
    if "<|" not in text:
        return text
    for marker in MARKERS:
        text = text.replace(marker, marker[:2] + "\u200b" + marker[2:])
    return text


@dataclass(frozen=True)
class TrainingTextConfig:
    reward_token: bool = field(default=True, metadata={"help": "Start each text with <|good|> or <|bad|> (spec). False: no reward token (ablation)."})
    textual_feedback: bool = field(default=True, metadata={"help": "Add the <|lang_feedback|> span to failures. False: binary reward only (ablation)."})
    feedback_style: Literal["paper", "rich"] = field(default="paper", metadata={"help": "'paper': trimmed traceback; 'rich': also the failing assert's operand values. Sets the executor's feedback style."})
    postprocess_hints: bool = field(default=False, metadata={"help": "leti's own rule-based hints for known failure patterns (code after the first function, undefined name, missing return, timeout, missing module), appended to a failure's feedback. The authors' form of the spec's post-processing ablation is stop_hint."})
    append_eos: bool = field(default=False, metadata={"help": "Append the tokenizer's end-of-text token (authors: no; teaches the model where to stop)."})
    feedback_content: Literal["execution", "constant"] = field(default="execution", metadata={"help": "'execution': the executor's feedback (spec); 'constant': every span holds the same sentence, CONSTANT_FEEDBACK (control: the layout without the information)."})
    stop_hint: bool = field(default=False, metadata={"help": "The authors' feedback post-processing (run_leti.py --postprocess_generation mbpp --postprocess_lang_feedback): sample without stop sequences (leave sampling.stop_sequences true: false means never cut), cut each sample at them afterwards (execution and training see the cut program) and, when the cut dropped text, say so in the feedback span, passing samples included: 'We only need the first defined function. You should not generate the rest of the code that starts with [<up to 128 characters>]. Try to use <end-of-text> to end your code.'"})
    keep_failures: bool = field(default=True, metadata={"help": "Train on failed samples too (spec). False: passing samples only (control: filtered self-training)."})

    def __post_init__(self) -> None:
        if self.feedback_style not in ("paper", "rich"):
            raise ValueError(f"training_text.feedback_style must be 'paper' or 'rich', got {self.feedback_style!r}")
        if self.feedback_content not in ("execution", "constant"):
            raise ValueError(f"training_text.feedback_content must be 'execution' or 'constant', got {self.feedback_content!r}")
        if self.feedback_content == "constant" and not self.textual_feedback:
            raise ValueError("training_text.feedback_content='constant' fills the feedback span, which textual_feedback: false removes; turn one of them off")
        if self.postprocess_hints and (not self.textual_feedback or self.feedback_content == "constant"):
            raise ValueError("training_text.postprocess_hints are appended to the execution feedback, which "
                             "textual_feedback: false or feedback_content: constant leaves out; turn one of them off")
        if self.stop_hint and (not self.textual_feedback or self.feedback_content == "constant"):
            raise ValueError("training_text.stop_hint goes in the feedback span, which textual_feedback: false or "
                             "feedback_content: constant leaves out; turn one of them off")


def build_training_text(
    prompt: str,
    completion: str,
    result: ExecutionResult,
    cfg: TrainingTextConfig,
    eos_token: str = "",
    cut_off: str = "",
) -> str:
    """The training text for one sample (layout in the module docstring). `cut_off`: what the
    loop cut off an unstopped sample at the stop sequences (training_text.stop_hint)."""
    if cfg.append_eos and not eos_token:
        raise ValueError("append_eos is on but no eos_token was given (pass tokenizer.eos_token)")
    parts: list[str] = []
    if cfg.reward_token:
        parts.append(GOOD if result.passed else BAD)
    lines = []
    if cfg.textual_feedback and not result.passed:
        if cfg.feedback_content == "constant":
            lines.append(CONSTANT_FEEDBACK)
        else:
            lines.append(feedback_text(completion, result, hints=cfg.postprocess_hints))
    if cfg.stop_hint and cut_off.strip():
        lines.append(stop_hint(cut_off, eos_token))
    if lines:
        parts += [FEEDBACK_OPEN, inert("\n".join(lines)), FEEDBACK_CLOSE]
    parts += [prompt, inert(completion)]
    if cfg.append_eos:
        parts.append(eos_token)
    return "".join(parts)


def stop_hint(cut_off: str, eos_token: str) -> str:
    """The authors' one post-processing rule, worded as theirs (run_leti.py,
    mbpp_postprocess_langfeedback_fn): quote the start of what was cut off the sample and ask
    for end-of-text instead."""
    eos = eos_token or "<|endoftext|>"  # the authors' (CodeGen's) end-of-text string
    return (f"We only need the first defined function. You should not generate the rest of the code that "
            f"starts with [{cut_off.strip()[:128]}]. Try to use {eos} to end your code.")


def feedback_text(completion: str, result: ExecutionResult, hints: bool = False) -> str:
    """The feedback span's content: executor feedback, then (optionally) hint lines."""
    text = result.feedback.rstrip()
    if not text:
        # The executor always fills feedback for failures; this keeps the span non-empty if a
        # result was built by hand.
        text = f"The program failed ({result.status.value})."
    if hints:
        extra = postprocess_hints(completion, result)
        if extra:
            text = text + "\n" + "\n".join(extra)
    return text


# --- post-processing hints -------------------------------------------------------------------
# Each rule looks at the completion and the typed result and returns one sentence or None.
# Rules are ordered; all that match are appended.


# What ast.parse raises on model output besides SyntaxError: ValueError for a NUL byte (older
# Pythons), RecursionError / MemoryError for valid code nested thousands deep.
UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


def _top_level_code_after_first_function(completion: str) -> bool:
    """True when the completion defines a function and then keeps writing top-level code
    (more functions, calls, prints): the pattern the authors' hint targets."""
    try:
        body = ast.parse(completion).body
    except UNPARSABLE:
        body = None
    if body is not None:  # statements, so a string literal's continuation lines are not code
        first = next((i for i, node in enumerate(body)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        return first is not None and first + 1 < len(body)
    # Unparsable (often cut off mid-statement): judge by indentation, line by line.
    seen_def = False
    for line in completion.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        top_level = not line[:1].isspace()
        if not seen_def:
            seen_def = top_level and re.match(r"(async\s+)?def\s", stripped) is not None
        elif top_level:
            return True
    return False


def _hint_extra_code(completion: str, result: ExecutionResult) -> str | None:
    if _top_level_code_after_first_function(completion):
        return ("Hint: only the first function is needed to solve the problem; "
                "stop writing code after it.")
    return None


def _hint_undefined_name(completion: str, result: ExecutionResult) -> str | None:
    if result.exception_type != "NameError" or not result.message:
        return None
    m = re.search(r"name '([^']+)' is not defined", result.message)
    if not m:
        return None
    return f"Hint: '{m.group(1)}' is used but never defined or imported; define or import it before use."


def _first_function_returns(completion: str) -> bool | None:
    """Whether the first function in the completion has a `return <value>`; None if unparsable."""
    try:
        tree = ast.parse(completion)
    except UNPARSABLE:
        return None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return _returns_a_value(node.body)
    return None


def _returns_a_value(statements: list[ast.stmt]) -> bool:
    """Whether these statements `return`/`yield` a value, not counting nested functions,
    lambdas and classes (their returns are not the function's)."""
    todo: list[ast.AST] = list(statements)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def _hint_missing_return(completion: str, result: ExecutionResult) -> str | None:
    # A function without `return` yields None, which then fails the test's comparison or a
    # later operation on the value ("'NoneType' object ...").
    none_type = result.exception_type == "TypeError" and "NoneType" in (result.message or "")
    if (result.exception_type == "AssertionError" or none_type) and _first_function_returns(completion) is False:
        return "Hint: the function has no return statement, so it returns None; return the result."
    return None


def _hint_timeout(completion: str, result: ExecutionResult) -> str | None:
    if result.status is Status.TIMEOUT:
        return "Hint: the program did not finish in time; look for a loop that never ends."
    return None


def _hint_missing_module(completion: str, result: ExecutionResult) -> str | None:
    if result.exception_type in ("ModuleNotFoundError", "ImportError"):
        return "Hint: only the Python standard library is available; do not import other packages."
    return None


_RULES = (_hint_extra_code, _hint_undefined_name, _hint_missing_return, _hint_timeout, _hint_missing_module)


def postprocess_hints(completion: str, result: ExecutionResult) -> list[str]:
    """Hint sentences for the failure patterns recognised in this sample (empty if none)."""
    if result.passed:
        return []
    return [h for rule in _RULES if (h := rule(completion, result)) is not None]
