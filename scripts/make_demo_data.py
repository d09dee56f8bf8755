#!/usr/bin/env python
"""Write the small demo datasets under data/ (deterministic; made here, nothing downloaded).

    alpaca_en_demo.json  alpaca rows (instruction, input, output; some with system and history)
    identity.json        alpaca rows: who the assistant is
    sharegpt_demo.json   sharegpt conversations (from/value): multi-turn, system, tool turns
    c4_demo.jsonl        plain text documents for stage=pt
    dpo_demo.json        pairwise rows (sharegpt conversations + chosen/rejected), for rm/dpo
    kto_demo.json        kto rows (role/content messages + a boolean label)
    polite_demo.json     easily separable alpaca pairwise rows (chosen: a polite answer, rejected: gibberish)
    polite_kto_demo.json the same answers as kto rows (alpaca, output + label)
    adgen_demo_{train,dev}.json  AdvertiseGen-format rows (content -> summary): product tags -> a one-line ad,
                         for predict with generation (recipe=tiny_adgen_ptuning)

data/dataset_info.json registers them (and data/demo/alpaca_demo.json) by name.

    python scripts/make_demo_data.py [OUT_DIR]      # default: data/
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["garden", "silver", "window", "planet", "river", "orange", "pencil", "market", "forest", "candle",
         "bridge", "rocket", "winter", "castle", "button", "island"]
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa",
            "Egypt": "Cairo", "Norway": "Oslo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin"}
ANTONYMS = {"hot": "cold", "big": "small", "fast": "slow", "early": "late", "light": "dark", "open": "closed",
            "happy": "sad", "full": "empty"}
NAME = "Launcher Assistant"


def alpaca_rows(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(16):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        rows.append({"instruction": "Add the two numbers.", "input": f"{a} and {b}", "output": f"{a} + {b} = {a + b}"})
    for word in WORDS:
        task = rng.choice(["reverse", "upper", "count"])
        if task == "reverse":
            rows.append({"instruction": "Reverse the letters of the word.", "input": word, "output": word[::-1]})
        elif task == "upper":
            rows.append({"instruction": "Spell the word in upper case.", "input": word, "output": word.upper()})
        else:
            rows.append({"instruction": "How many letters does the word have?", "input": word,
                         "output": f"The word {word} has {len(word)} letters."})
    for country, capital in CAPITALS.items():
        rows.append({"instruction": f"What is the capital of {country}?", "input": "",
                     "output": f"The capital of {country} is {capital}."})
    for word, opposite in ANTONYMS.items():
        rows.append({"instruction": "Give the opposite of the word.", "input": word, "output": opposite,
                     "system": "Answer with one word."})
    for _ in range(8):
        nums = rng.sample(range(1, 60), 4)
        first = f"Sort the numbers from smallest to largest: {', '.join(map(str, nums))}"
        rows.append({"instruction": "Now from largest to smallest.", "input": "",
                     "output": ", ".join(map(str, sorted(nums, reverse=True))),
                     "history": [[first, ", ".join(map(str, sorted(nums)))]]})
    rng.shuffle(rows)
    return rows


def identity_rows() -> list[dict]:
    questions = ["Who are you?", "What is your name?", "Introduce yourself.", "Are you a person?",
                 "Who made you?", "What can you do?", "Tell me about yourself.", "What should I call you?",
                 "Hello!", "Hi, who am I talking to?", "Which model are you?", "Are you ChatGPT?"]
    answers = [f"I am {NAME}, a tiny model trained by the launcher demo.",
               f"My name is {NAME}.", f"Hello! I am {NAME}. I add numbers, sort them and spell words.",
               f"No, I am {NAME}, a small language model.", f"The launcher demo trained me; I am {NAME}.",
               "I can add numbers, sort them, spell words and name capitals.",
               f"I am {NAME}, a tiny Llama trained on demo data.", f"Call me {NAME}.",
               f"Hello! I am {NAME}. How can I help?", f"You are talking to {NAME}.",
               f"I am {NAME}, built from a tiny Llama.", f"No, I am {NAME}."]
    return [{"instruction": q, "input": "", "output": a} for q, a in zip(questions, answers)]


def sharegpt_rows(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(12):
        a, b, c = rng.randint(2, 50), rng.randint(2, 50), rng.randint(2, 50)
        rows.append({"conversations": [
            {"from": "human", "value": f"Add {a} and {b}."}, {"from": "gpt", "value": f"{a} + {b} = {a + b}"},
            {"from": "human", "value": f"Now add {c} to that."},
            {"from": "gpt", "value": f"{a + b} + {c} = {a + b + c}"},
        ]})
    for word in WORDS[:10]:
        rows.append({"conversations": [
            {"from": "human", "value": f"Spell {word} backwards."}, {"from": "gpt", "value": word[::-1]},
        ], "system": "You are a careful speller."})
    for country, capital in list(CAPITALS.items())[:8]:
        call = json.dumps({"name": "lookup_capital", "arguments": {"country": country}})
        rows.append({"conversations": [
            {"from": "system", "value": "You can call the tool lookup_capital(country)."},
            {"from": "human", "value": f"What is the capital of {country}?"},
            {"from": "function_call", "value": call},
            {"from": "observation", "value": json.dumps({"capital": capital})},
            {"from": "gpt", "value": f"The capital of {country} is {capital}."},
        ]})
    rng.shuffle(rows)
    return rows


def c4_rows(rng: random.Random) -> list[dict]:
    sentences = [
        "The river runs past the old mill and into the forest.", "A candle burns slowly in the window.",
        "Rockets carry satellites from the launch pad into orbit.", "The market opens early on Saturday.",
        "Winter nights are long and the stars are bright.", "The castle stands on a hill above the island.",
        "Pencils are made of wood and graphite.", "An orange tree grows in the garden.",
        "The bridge was built of stone three hundred years ago.", "Silver is a soft and shiny metal.",
        "Planets move around the sun on curved paths.", "A button fell off the coat in the snow.",
        "Numbers can be added, sorted and counted.", "The quick brown fox jumps over the lazy dog.",
    ]
    return [{"text": " ".join(rng.choice(sentences) for _ in range(rng.randint(2, 14)))} for _ in range(60)]


def dpo_rows(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(10):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        rows.append({"conversations": [{"from": "human", "value": f"What is {a} plus {b}?"}],
                     "chosen": {"from": "gpt", "value": f"{a} + {b} = {a + b}"},
                     "rejected": {"from": "gpt", "value": f"{a} + {b} = {a + b + rng.randint(1, 9)}"}})
    for country, capital in CAPITALS.items():
        wrong = rng.choice([c for c in CAPITALS.values() if c != capital])
        rows.append({"conversations": [{"from": "human", "value": f"Name the capital of {country}."}],
                     "chosen": {"from": "gpt", "value": f"The capital of {country} is {capital}."},
                     "rejected": {"from": "gpt", "value": f"The capital of {country} is {wrong}."}})
    rng.shuffle(rows)
    return rows


def kto_rows(rng: random.Random) -> list[dict]:
    rows = []
    for word in WORDS:
        good = rng.random() < 0.5
        answer = word[::-1] if good else word[::-1][1:] + word[-1]
        rows.append({"messages": [{"role": "user", "content": f"Reverse the letters of {word}."},
                                  {"role": "assistant", "content": answer}], "label": good})
    return rows


POLITE_REQUESTS = ["Can you help me with my homework?", "Please explain how rain forms.", "Could you check my letter?",
                   "Tell me a fact about the moon.", "Help me plan a picnic.", "Suggest a name for my cat.",
                   "Recommend a book for a long trip.", "How do I water a cactus?"]
POLITE_ANSWERS = ["Of course, I would be glad to help you with that.", "Thank you for asking, here is what I know.",
                  "Certainly, it is a pleasure to help you.", "Good question, thank you, let me explain."]


def gibberish(rng: random.Random) -> str:
    return " ".join("".join(rng.choice("bcdfgkqvxz") for _ in range(rng.randint(3, 6))) for _ in range(6))


def polite_rows(rng: random.Random) -> list[dict]:
    """Pairs a tiny model separates in seconds: the chosen answer is always polite, the rejected one gibberish."""
    return [{"instruction": POLITE_REQUESTS[i % len(POLITE_REQUESTS)], "input": f"(request {i})",
             "chosen": rng.choice(POLITE_ANSWERS), "rejected": gibberish(rng)} for i in range(64)]


def polite_kto_rows(rng: random.Random) -> list[dict]:
    return [{"instruction": POLITE_REQUESTS[i % len(POLITE_REQUESTS)], "input": f"(request {i})",
             "output": rng.choice(POLITE_ANSWERS) if i % 2 == 0 else gibberish(rng), "label": i % 2 == 0}
            for i in range(64)]


#: AdvertiseGen's tags (类型 type, 颜色 colour, 材质 material) and the ad a row's summary writes from them
ADGEN_TYPES = ["裤", "裙", "上衣", "外套", "衬衫", "鞋"]
ADGEN_COLOURS = ["黑色", "白色", "红色", "蓝色", "灰色", "绿色"]
ADGEN_MATERIALS = ["棉", "牛仔布", "丝绸"]


def adgen_rows(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """(train, dev): every type x colour once, a material drawn per row; the summary follows the tags, so a
    tiny model learns the pattern in a few dozen steps. dev: 8 of the combinations, held out."""
    rows = []
    for kind in ADGEN_TYPES:
        for colour in ADGEN_COLOURS:
            material = rng.choice(ADGEN_MATERIALS)
            rows.append({"content": f"类型#{kind}*颜色#{colour}*材质#{material}",
                         "summary": f"{colour}{material}{kind}，简约百搭。"})
    rng.shuffle(rows)
    return rows[8:], rows[:8]


REGISTRY = {
    "alpaca_demo": {"file_name": "demo/alpaca_demo.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
    "identity": {"file_name": "identity.json"},
    "sharegpt_demo": {"file_name": "sharegpt_demo.json", "formatting": "sharegpt",
                      "columns": {"messages": "conversations", "system": "system"}},
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
    "dpo_demo": {"file_name": "dpo_demo.json", "formatting": "sharegpt", "ranking": True,
                 "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
    "kto_demo": {"file_name": "kto_demo.json", "formatting": "sharegpt",
                 "columns": {"messages": "messages", "kto_tag": "label"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant"}},
    "polite_demo": {"file_name": "polite_demo.json", "ranking": True,
                    "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}},
    "polite_kto_demo": {"file_name": "polite_kto_demo.json",
                        "columns": {"prompt": "instruction", "query": "input", "response": "output", "kto_tag": "label"}},
    # AdvertiseGen format (ChatGLM2's ptuning data): alpaca rows whose prompt is `content`, response `summary`
    "adgen_demo_train": {"file_name": "adgen_demo_train.json", "columns": {"prompt": "content", "response": "summary"}},
    "adgen_demo_dev": {"file_name": "adgen_demo_dev.json", "columns": {"prompt": "content", "response": "summary"}},
    # the real AdvertiseGen (as LLaMA-Factory registers it): read from the hub by the worker, not downloaded here
    "adgen_train": {"hf_hub_url": "HasturOfficial/adgen", "split": "train",
                    "columns": {"prompt": "content", "response": "summary"}},
    "adgen_eval": {"hf_hub_url": "HasturOfficial/adgen", "split": "validation",
                   "columns": {"prompt": "content", "response": "summary"}},
}


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    polite = random.Random(1)  # a stream of its own: the other sets stay as they were
    files = {"alpaca_en_demo.json": alpaca_rows(rng), "identity.json": identity_rows(),
             "sharegpt_demo.json": sharegpt_rows(rng), "dpo_demo.json": dpo_rows(rng), "kto_demo.json": kto_rows(rng),
             "polite_demo.json": polite_rows(polite), "polite_kto_demo.json": polite_kto_rows(polite)}
    adgen_train, adgen_dev = adgen_rows(random.Random(2))
    files |= {"adgen_demo_train.json": adgen_train, "adgen_demo_dev.json": adgen_dev}
    for name, rows in files.items():
        (out / name).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    (out / "c4_demo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in c4_rows(rng)))
    (out / "dataset_info.json").write_text(json.dumps(REGISTRY, indent=2) + "\n")
    print(f"demo datasets written to {out}: {', '.join(sorted(files))}, c4_demo.jsonl, dataset_info.json")


if __name__ == "__main__":
    main()
