#!/usr/bin/env python3
"""Dev-time: what lm-evaluation-harness's own code makes of generated answers, for the GSM8K
answer extraction and exact match of `llama eval` (Tests/Fixtures/eval/gsm8k-extraction.json).
Runs the harness's RegexFilter with gsm8k.yaml's two patterns and its exact_match metric with
gsm8k.yaml's options on hand-written responses and real GSM8K references.

    pip install lm_eval
    python3 Tools/make_eval_fixtures.py ../shared/data/eval/gsm8k/test.jsonl > Tests/Fixtures/eval/gsm8k-extraction.json
"""
import json, sys

from lm_eval.api.metrics import exact_match_hf_evaluate
from lm_eval.filters.extraction import RegexFilter

STRICT = r"#### (\-?[0-9\.\,]+)"
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]

RESPONSES = [
    " Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72",
    " She earns 12/60 = $0.2 per minute.\n#### $10.",
    " The answer is 1,000.",
    " It costs $1,250.50 in total.\n#### 1,250.50",
    " -5 degrees, so the change is -12\n#### -12",
    " There are 3 cats and 4 dogs, 7 animals.",
    " No number here.",
    "",
    " 42",
    " 7\n\n",
    " #### 18\n#### 20",
    " The total is 3.5 hours. That is 210 minutes.",
    " x = 5, y = 10. So 15.",
    " He pays $5 and gets $.50 back",
    " 100%",
    " 2.",
    " #### 0",
    " Answer: 1/2",
]


def main():
    refs = [json.loads(l)["answer"] for l in open(sys.argv[1]) if l.strip()][:6]
    refs += ["#### 10", "#### 1000", "#### 1250.50", "#### -12", "#### 7", "#### 0", "#### 15", "#### 18", "#### 2"]
    strict = RegexFilter(regex_pattern=STRICT, group_select=0)
    flexible = RegexFilter(regex_pattern=FLEXIBLE, group_select=-1)
    cases = []
    for r in RESPONSES:
        s = list(strict.apply([[r]], [{}]))[0][0]
        f = list(flexible.apply([[r]], [{}]))[0][0]
        matches = {}
        for ref in refs:
            for name, got in (("strict-match", s), ("flexible-extract", f)):
                em = exact_match_hf_evaluate([got], [ref], regexes_to_ignore=IGNORE, ignore_case=True,
                                             ignore_punctuation=False)["exact_match"]
                if em == 1.0:
                    matches.setdefault(name, []).append(ref)
        cases.append({"response": r, "strict-match": s, "flexible-extract": f, "matches": matches})
    json.dump({"tool": "lm_eval RegexFilter + exact_match_hf_evaluate, gsm8k.yaml options", "references": refs,
               "cases": cases}, sys.stdout, indent=1, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()
