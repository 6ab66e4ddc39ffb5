"""Templated arithmetic word problems whose diversity is controlled: the demo's dataset.

Every template below was written for this package (none is taken from GSM8K, SVAMP or another
dataset). A template is a story with named numbers, a list of worked steps and the name of the final
answer; numbers are drawn from a seeded ``random.Random`` and derived quantities are computed from
them, so that every division is exact and no count goes negative. The 64 templates differ in story,
operations (addition, subtraction, multiplication, exact and rounded-up division, percentages,
fractions, ratios, rates, unit conversion) and number of steps (1 to 4).

``demo_ladder`` draws equal-size subsets from the first 1, 4, 16 and 64 templates: the more templates,
the more kinds of reasoning, and the higher a gradient-diversity score should be.

A problem is a dict ``{"question": str, "answer": str, "final_answer": str, "template": int}``; the
answer holds the worked steps, one per line, and ends with ``"Answer: <final_answer>"``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

NAMES = ("Mia", "Omar", "Lena", "Ravi", "Sofia", "Jonas", "Aiko", "Tariq", "Elena", "Kofi", "Priya", "Mateo",
         "Hana", "Felix", "Zara", "Ivan")
OTHERS = ("Noah", "Amara", "Leo", "Yuki", "Dario", "Nadia", "Sam", "Ines")


@dataclass(frozen=True)
class Template:
    """One problem template.

    Attributes:
        name: a short identifier.
        question: format string over the variables.
        variables: ``(name, spec)`` pairs evaluated in order; spec is ``(lo, hi)`` (a uniform int in
            ``[lo, hi]``), a tuple of strings (one chosen), a list of ints (one chosen), or a Python
            expression string over earlier variables (integer arithmetic written so it is exact).
        steps: format strings, one worked step each.
        answer: the variable holding the final answer.
    """

    name: str
    question: str
    variables: tuple
    steps: tuple
    answer: str

    def sample(self, rng: random.Random) -> dict:
        """One problem ``{"question", "answer", "final_answer"}`` with numbers drawn from ``rng``."""
        env: dict = {}
        for var, spec in self.variables:
            if isinstance(spec, str):
                env[var] = eval(spec, {"__builtins__": {}}, dict(env))  # our own expressions only
            elif isinstance(spec, tuple) and spec and isinstance(spec[0], str):
                env[var] = rng.choice(spec)
            elif isinstance(spec, list):
                env[var] = rng.choice(spec)
            else:
                lo, hi = spec
                env[var] = rng.randint(lo, hi)
        final = env[self.answer]
        if not isinstance(final, int) or final < 0:
            raise AssertionError(f"template {self.name}: answer {final!r} is not a non-negative int")
        steps = [s.format(**env) for s in self.steps]
        return {"question": self.question.format(**env),
                "answer": "\n".join(steps + [f"Answer: {final}"]),
                "final_answer": str(final)}


def _t(name, question, variables, steps, answer) -> Template:
    return Template(name, question, tuple(variables.items()), tuple(steps), answer)


N = ("name", NAMES)
N2 = ("name2", OTHERS)

TEMPLATES: tuple[Template, ...] = (
    _t("apples_bags",
       "{name} has {a} apples and buys {b} bags with {c} apples in each bag. How many apples does {name} have now?",
       dict([N], a=(3, 40), b=(2, 9), c=(3, 12), bc="b * c", ans="a + bc"),
       ["The bags hold {b} x {c} = {bc} apples.", "{name} has {a} + {bc} = {ans} apples."], "ans"),
    _t("train_seats",
       "A train has {total} seats and {taken} of them are taken. How many seats are free?",
       dict(taken=(20, 300), free=(5, 200), total="taken + free"),
       ["Free seats: {total} - {taken} = {free}."], "free"),
    _t("bakery_boxes",
       "A bakery bakes {total} cookies and packs them in boxes of {per}. How many boxes does it fill?",
       dict(per=(4, 12), boxes=(5, 40), total="per * boxes"),
       ["Boxes: {total} / {per} = {boxes}."], "boxes"),
    _t("garden_rows",
       "{name} plants {r} rows of tomatoes with {t} plants per row and {p} rows of peppers with {q} plants per "
       "row. Later {d} plants die. How many plants are left?",
       dict([N], r=(2, 8), t=(3, 10), p=(2, 8), q=(3, 10), rt="r * t", pq="p * q", all_="rt + pq",
            d=(1, 9), ans="all_ - d"),
       ["Tomatoes: {r} x {t} = {rt}.", "Peppers: {p} x {q} = {pq}.", "Together: {rt} + {pq} = {all_}.",
        "After {d} die: {all_} - {d} = {ans}."], "ans"),
    _t("cyclist_distance",
       "A cyclist rides at {v} km per hour for {h} hours and then rides {w} km more. How many km does the "
       "cyclist ride in total?",
       dict(v=(10, 30), h=(2, 6), w=(3, 25), vh="v * h", ans="vh + w"),
       ["Distance at speed: {v} x {h} = {vh} km.", "Total: {vh} + {w} = {ans} km."], "ans"),
    _t("notebook_change",
       "{name} buys {n} notebooks at ${p} each and pays with a ${bill} bill. How much change does {name} get?",
       dict([N], n=(2, 8), p=(2, 9), cost="n * p", change=(1, 30), bill="cost + change"),
       ["The notebooks cost {n} x ${p} = ${cost}.", "Change: ${bill} - ${cost} = ${change}."], "change"),
    _t("savings_weeks",
       "{name} has ${start} and saves ${s} every week. After how many weeks will {name} have ${goal}?",
       dict([N], start=(0, 60), s=(5, 25), w=(3, 20), goal="start + s * w", need="s * w"),
       ["{name} still needs ${goal} - ${start} = ${need}.", "Weeks: ${need} / ${s} = {w}."], "w"),
    _t("jacket_sale",
       "A jacket costs ${price}. It is on sale for {pct}% off. What is the sale price?",
       dict(m=(2, 25), price="20 * m", pct=[5, 10, 15, 20, 25, 30, 40, 50], off="price * pct // 100",
            ans="price - off"),
       ["The discount is {pct}% of ${price} = ${off}.", "Sale price: ${price} - ${off} = ${ans}."], "ans"),
    _t("game_average",
       "{name} scored {a}, {b} and {c} points in three games. What is the average score per game?",
       dict([N], avg=(15, 40), d1=(-6, 6), d2=(-6, 6), a="avg + d1", b="avg + d2", c="avg - d1 - d2",
            s="a + b + c"),
       ["Total points: {a} + {b} + {c} = {s}.", "Average: {s} / 3 = {avg}."], "avg"),
    _t("ages_times",
       "{name} is {a} years old. {name2} is {m} times as old as {name}. How old will {name2} be in {y} years?",
       dict([N, N2], a=(3, 12), m=(2, 5), y=(2, 15), now="a * m", ans="now + y"),
       ["{name2} is {m} x {a} = {now} years old now.", "In {y} years: {now} + {y} = {ans}."], "ans"),
    _t("field_area",
       "A rectangular field is {l} m long and {w} m wide. What is its area in square meters?",
       dict(l=(5, 60), w=(3, 40), ans="l * w"),
       ["Area: {l} x {w} = {ans} square meters."], "ans"),
    _t("fence_cost",
       "A fence goes around a rectangular yard that is {l} m by {w} m. Fencing costs ${c} per meter. How much "
       "does the fence cost?",
       dict(l=(5, 30), w=(3, 20), c=(2, 9), lw="l + w", per="2 * lw", ans="per * c"),
       ["Length plus width: {l} + {w} = {lw} m.", "Perimeter: 2 x {lw} = {per} m.",
        "Cost: {per} x ${c} = ${ans}."], "ans"),
    _t("sticker_ratio",
       "{name} and {name2} share {total} stickers in the ratio {a}:{b}. How many stickers does {name2} get?",
       dict([N, N2], a=(1, 5), b=(1, 5), k=(2, 12), parts="a + b", total="parts * k", ans="b * k"),
       ["There are {a} + {b} = {parts} parts.", "One part is {total} / {parts} = {k} stickers.",
        "{name2} gets {b} x {k} = {ans} stickers."], "ans"),
    _t("movie_minutes",
       "A movie lasts {h} hours and {m} minutes. How many minutes long is it?",
       dict(h=(1, 3), m=(5, 55), hm="h * 60", ans="hm + m"),
       ["{h} hours is {h} x 60 = {hm} minutes.", "Total: {hm} + {m} = {ans} minutes."], "ans"),
    _t("recipe_flour",
       "A recipe needs {f} cups of flour for {s} servings. How many cups are needed for {t} servings?",
       dict(u=(1, 5), s=(2, 8), f="u * s", m=(2, 6), t="s * m", ans="f * m"),
       ["{t} servings is {t} / {s} = {m} times the recipe.", "Flour: {f} x {m} = {ans} cups."], "ans"),
    _t("vans_needed",
       "{n} students go on a trip. Each van holds {c} students. How many vans are needed?",
       dict(c=(5, 12), q=(2, 9), r=(1, 4), n_full="q * c", n="n_full + r", ans="q + 1"),
       ["{q} full vans carry {q} x {c} = {n_full} students.",
        "{r} students are left, so one more van: {q} + 1 = {ans}."], "ans"),
    _t("pages_compare",
       "{name} read {a} pages on Monday and {b} pages on Tuesday. {name2} read {c} pages in total. How many more "
       "pages did {name} read than {name2}?",
       dict([N, N2], a=(10, 60), b=(10, 60), s="a + b", diff=(1, 15), c="s - diff"),
       ["{name} read {a} + {b} = {s} pages.", "Difference: {s} - {c} = {diff}."], "diff"),
    _t("tank_fraction",
       "A tank holds {cap} liters and is {num}/{den} full. How many more liters are needed to fill it?",
       dict(den=[3, 4, 5, 8], k=(5, 30), cap="den * k", num="1 + k % (den - 1)", filled="num * k",
            ans="cap - filled"),
       ["One part is {cap} / {den} = {k} liters.", "It holds {num} x {k} = {filled} liters.",
        "Still needed: {cap} - {filled} = {ans} liters."], "ans"),
    _t("overtime_pay",
       "{name} earns ${r} per hour for the first {h} hours of a week and ${o} per hour after that. This week "
       "{name} works {t} hours. How much does {name} earn?",
       dict([N], r=(10, 20), extra=(2, 8), o="r + extra", h=[30, 35, 40], e=(1, 10), t="h + e", base="r * h",
            over="o * e", ans="base + over"),
       ["Regular pay: {h} x ${r} = ${base}.", "Overtime hours: {t} - {h} = {e}.",
        "Overtime pay: {e} x ${o} = ${over}.", "Total: ${base} + ${over} = ${ans}."], "ans"),
    _t("building_windows",
       "A building has {f} floors. Each floor has {a} apartments and each apartment has {w} windows. How many "
       "windows does the building have?",
       dict(f=(3, 20), a=(2, 8), w=(2, 6), fa="f * a", ans="fa * w"),
       ["Apartments: {f} x {a} = {fa}.", "Windows: {fa} x {w} = {ans}."], "ans"),
    _t("bus_stops",
       "A bus leaves with {a} passengers. At the first stop {b} get off and {c} get on. At the second stop {d} "
       "get off. How many passengers are on the bus now?",
       dict(a=(20, 50), b=(1, 10), c=(1, 20), s1="a - b", s2="s1 + c", d=(1, 10), ans="s2 - d"),
       ["After {b} get off: {a} - {b} = {s1}.", "After {c} get on: {s1} + {c} = {s2}.",
        "After {d} get off: {s2} - {d} = {ans}."], "ans"),
    _t("temperature_day",
       "In the morning it was {a} degrees. By noon it rose by {b} degrees, and by night it fell by {c} degrees. "
       "What was the temperature at night?",
       dict(a=(5, 20), b=(2, 15), noon="a + b", c=(1, 7), ans="noon - c"),
       ["Noon: {a} + {b} = {noon} degrees.", "Night: {noon} - {c} = {ans} degrees."], "ans"),
    _t("plant_doubles",
       "A plant is {h} cm tall and doubles its height every week. How tall is it after 3 weeks?",
       dict(h=(2, 40), w1="2 * h", w2="2 * w1", ans="2 * w2"),
       ["Week 1: 2 x {h} = {w1} cm.", "Week 2: 2 x {w1} = {w2} cm.", "Week 3: 2 x {w2} = {ans} cm."], "ans"),
    _t("family_tickets",
       "Adult tickets cost ${a} and child tickets cost ${c}. A family buys {x} adult tickets and {y} child "
       "tickets. How much do they pay?",
       dict(a=(8, 20), c=(3, 9), x=(1, 4), y=(1, 5), ax="a * x", cy="c * y", ans="ax + cy"),
       ["Adults: {x} x ${a} = ${ax}.", "Children: {y} x ${c} = ${cy}.", "Total: ${ax} + ${cy} = ${ans}."], "ans"),
    _t("book_days",
       "A book has {p} pages. {name} reads {r} pages a day. How many days does {name} need to finish it?",
       dict([N], r=(5, 30), d=(3, 20), p="r * d"),
       ["Days: {p} / {r} = {d}."], "d"),
    _t("marbles_give",
       "{name} has {m} marbles and gives 1/{q} of them to {name2}. Then {name} buys {b} more. How many marbles "
       "does {name} have now?",
       dict([N, N2], q=[2, 3, 4, 5], k=(3, 15), m="q * k", left="m - k", b=(2, 20), ans="left + b"),
       ["{name} gives away {m} / {q} = {k} marbles.", "Left: {m} - {k} = {left}.",
        "After buying: {left} + {b} = {ans}."], "ans"),
    _t("pizza_slices",
       "{n} pizzas are cut into {s} slices each. {p} people eat {e} slices each. How many slices are left?",
       dict(s=[6, 8, 10, 12], p=(2, 6), e=(1, 3), eaten="p * e", x=(0, 2), n="eaten // s + 1 + x", all_="n * s",
            ans="all_ - eaten"),
       ["Slices: {n} x {s} = {all_}.", "Eaten: {p} x {e} = {eaten}.", "Left: {all_} - {eaten} = {ans}."], "ans"),
    _t("school_walks",
       "{name} walks {d} km to school and the same way back every day. How many km does {name} walk in {n} days?",
       dict([N], d=(1, 6), n=(2, 10), day="2 * d", ans="day * n"),
       ["Each day: 2 x {d} = {day} km.", "In {n} days: {day} x {n} = {ans} km."], "ans"),
    _t("pen_packs",
       "A pack of {a} pens costs ${pa} and a pack of {b} pens costs ${pb}. How many dollars cheaper per pen is "
       "the second pack?",
       dict(a=(2, 6), u=(3, 9), pa="a * u", b=(7, 12), dv=(1, 2), v="u - dv", pb="b * v"),
       ["First pack: ${pa} / {a} = ${u} per pen.", "Second pack: ${pb} / {b} = ${v} per pen.",
        "Difference: ${u} - ${v} = ${dv}."], "dv"),
    _t("dripping_tap",
       "A tap drips {d} ml of water every minute. How many ml does it drip in {h} hours?",
       dict(d=(2, 15), h=(2, 12), mins="h * 60", ans="mins * d"),
       ["{h} hours is {h} x 60 = {mins} minutes.", "Water: {mins} x {d} = {ans} ml."], "ans"),
    _t("shirt_stock",
       "A shop had {a} shirts. It sold {b} on Monday and {c} on Tuesday, then received {d} boxes with {e} shirts "
       "each. How many shirts does it have now?",
       dict(a=(40, 120), b=(5, 20), c=(5, 20), sold="b + c", left="a - sold", d=(2, 6), e=(5, 12), de="d * e",
            ans="left + de"),
       ["Sold: {b} + {c} = {sold}.", "Left: {a} - {sold} = {left}.", "Delivered: {d} x {e} = {de}.",
        "Now: {left} + {de} = {ans}."], "ans"),
    _t("running_plan",
       "{name} runs {a} km on the first day and each day runs {b} km more than the day before. How many km does "
       "{name} run in the first 4 days?",
       dict([N], a=(1, 8), b=(1, 3), d2="a + b", d3="d2 + b", d4="d3 + b", ans="a + d2 + d3 + d4"),
       ["Days 2, 3 and 4: {d2}, {d3} and {d4} km.", "Total: {a} + {d2} + {d3} + {d4} = {ans} km."], "ans"),
    _t("split_bill",
       "{n} friends share a restaurant bill of ${b} and a tip of ${t} equally. How much does each friend pay?",
       dict(n=(2, 6), each=(8, 40), tot="n * each", t=(2, 15), b="tot - t"),
       ["Bill and tip: ${b} + ${t} = ${tot}.", "Each pays ${tot} / {n} = ${each}."], "each"),
    _t("laptop_tax",
       "A laptop costs ${p} before a {t}% sales tax. What does it cost with the tax?",
       dict(k=(3, 12), p="100 * k", t=(4, 12), tax="k * t", ans="p + tax"),
       ["Tax: {t}% of ${p} = ${tax}.", "With tax: ${p} + ${tax} = ${ans}."], "ans"),
    _t("age_future",
       "{name} is {a} years older than {name2}. In {y} years {name2} will be {b}. How old is {name} now?",
       dict([N, N2], a=(2, 9), y=(2, 10), now2=(5, 30), b="now2 + y", ans="now2 + a"),
       ["{name2} is now {b} - {y} = {now2}.", "{name} is {now2} + {a} = {ans}."], "ans"),
    _t("coin_jar",
       "{name} has {q} quarters and {d} dimes. How many cents is that?",
       dict([N], q=(1, 20), d=(1, 20), qc="q * 25", dc="d * 10", ans="qc + dc"),
       ["Quarters: {q} x 25 = {qc} cents.", "Dimes: {d} x 10 = {dc} cents.", "Total: {qc} + {dc} = {ans} cents."],
       "ans"),
    _t("orchard_apples",
       "An orchard has {r} rows of {t} trees. Each tree gives {f} apples, and {s} apples are sold. How many apples "
       "are left?",
       dict(r=(2, 9), t=(3, 10), f=(5, 20), rt="r * t", all_="rt * f", s=(1, 25), ans="all_ - s"),
       ["Trees: {r} x {t} = {rt}.", "Apples: {rt} x {f} = {all_}.", "Left: {all_} - {s} = {ans}."], "ans"),
    _t("pencil_boxes",
       "Each of {s} students needs {p} pencils. Pencils come in boxes of {b}. How many boxes are needed?",
       dict(b=[5, 10, 12], p=[2, 3, 4, 5, 6], k=(2, 12), s="b * k", need="s * p", ans="k * p"),
       ["Pencils: {s} x {p} = {need}.", "Boxes: {need} / {b} = {ans}."], "ans"),
    _t("flight_and_train",
       "A flight takes {a} hours and {m} minutes and the train ride after it takes {b} minutes. How many minutes "
       "does the whole trip take?",
       dict(a=(1, 5), m=(5, 55), b=(15, 90), am="a * 60", fl="am + m", ans="fl + b"),
       ["Flight: {a} x 60 + {m} = {fl} minutes.", "Whole trip: {fl} + {b} = {ans} minutes."], "ans"),
    _t("wall_paint",
       "A room has {w} walls, each {l} m wide and {h} m high. One liter of paint covers {c} square meters. How "
       "many liters are needed?",
       dict(w=[2, 3, 4], h=[2, 3], c=[2, 3, 4, 5], j=(1, 3), l="c * j",
            one="l * h", area="w * one", ans="area // c"),
       ["One wall: {l} x {h} = {one} square meters.", "All walls: {w} x {one} = {area} square meters.",
        "Paint: {area} / {c} = {ans} liters."], "ans"),
    _t("jar_split",
       "{name} had ${m}. After spending ${s} on lunch, {name} splits the rest equally among {n} jars. How much "
       "goes into each jar?",
       dict([N], n=(2, 6), each=(3, 20), rest="n * each", s=(4, 25), m="rest + s"),
       ["Left after lunch: ${m} - ${s} = ${rest}.", "Each jar: ${rest} / {n} = ${each}."], "each"),
    _t("two_machines",
       "Machine A makes {a} parts per hour and machine B makes {b} parts per hour. How many parts do they make "
       "together in {h} hours?",
       dict(a=(10, 60), b=(10, 60), ab="a + b", h=(2, 8), ans="ab * h"),
       ["Together per hour: {a} + {b} = {ab}.", "In {h} hours: {ab} x {h} = {ans}."], "ans"),
    _t("pool_fill",
       "A pool holds {v} liters and already has {s} liters in it. A hose adds {r} liters per minute. How many "
       "minutes until the pool is full?",
       dict(r=(5, 25), t=(10, 60), rt="r * t", s=(50, 500), v="s + rt"),
       ["Still missing: {v} - {s} = {rt} liters.", "Minutes: {rt} / {r} = {t}."], "t"),
    _t("football_points",
       "A team scores {t} touchdowns worth 6 points each and {f} field goals worth 3 points each. How many points "
       "does it score?",
       dict(t=(1, 8), f=(1, 8), tp="t * 6", fp="f * 3", ans="tp + fp"),
       ["Touchdowns: {t} x 6 = {tp}.", "Field goals: {f} x 3 = {fp}.", "Total: {tp} + {fp} = {ans} points."],
       "ans"),
    _t("lemonade_profit",
       "{name} spends ${c} on supplies and sells {n} cups of lemonade at ${p} each. What is the profit?",
       dict([N], n=(10, 40), p=(2, 5), sales="n * p", pr=(1, 15), c="sales - pr"),
       ["Sales: {n} x ${p} = ${sales}.", "Profit: ${sales} - ${c} = ${pr}."], "pr"),
    _t("cards_before",
       "After giving away {g} cards, {name} has {l} cards left. How many cards did {name} have at first?",
       dict([N], g=(2, 40), l=(5, 80), ans="g + l"),
       ["At first: {l} + {g} = {ans} cards."], "ans"),
    _t("glasses_percent",
       "In a class of {n} students, {p}% wear glasses. How many students do not wear glasses?",
       dict(k=(1, 3), n="20 * k", p=[10, 15, 20, 25, 30, 35, 40, 45, 50], g="n * p // 100", ans="n - g"),
       ["With glasses: {p}% of {n} = {g}.", "Without: {n} - {g} = {ans}."], "ans"),
    _t("book_box_weight",
       "An empty box weighs {b} kg. {name} packs {n} books that weigh {w} kg each into it. How heavy is the full "
       "box?",
       dict([N], b=(1, 5), n=(3, 20), w=(1, 3), nw="n * w", ans="nw + b"),
       ["Books: {n} x {w} = {nw} kg.", "Full box: {nw} + {b} = {ans} kg."], "ans"),
    _t("piano_hours",
       "{name} practices the piano {m} minutes a day, {d} days a week. How many hours does {name} practice in "
       "{w} weeks?",
       dict([N], d=[3, 4, 5, 6], j=(1, 4), m="60 // d * j", w=(2, 10), wk="m * d", mins="wk * w", ans="mins // 60"),
       ["Per week: {m} x {d} = {wk} minutes.", "In {w} weeks: {wk} x {w} = {mins} minutes.",
        "In hours: {mins} / 60 = {ans}."], "ans"),
    _t("car_fuel",
       "A car uses {l} liters of fuel per 100 km. How many liters does it use on a {d} km trip?",
       dict(l=(4, 12), k=(2, 9), d="100 * k", ans="l * k"),
       ["{d} km is {d} / 100 = {k} times 100 km.", "Fuel: {k} x {l} = {ans} liters."], "ans"),
    _t("can_pyramid",
       "A stack of cans has 4 layers. The bottom layer has {b} cans and each layer above has {c} fewer cans than "
       "the one below it. How many cans are in the stack?",
       dict(c=(1, 4), b=(15, 30), l2="b - c", l3="l2 - c", l4="l3 - c", ans="b + l2 + l3 + l4"),
       ["Layers from the bottom: {b}, {l2}, {l3} and {l4} cans.", "Total: {b} + {l2} + {l3} + {l4} = {ans}."],
       "ans"),
    _t("ribbon_left",
       "{name} wraps {n} gifts and each needs {r} cm of ribbon. The roll had {L} cm. How much ribbon is left?",
       dict([N], n=(2, 9), r=(20, 90), used="n * r", left=(5, 200), L="used + left"),
       ["Used: {n} x {r} = {used} cm.", "Left: {L} - {used} = {left} cm."], "left"),
    _t("elevator_load",
       "An elevator can carry {cap} kg. {n} people who weigh {p} kg each get in. How many more kg can it carry?",
       dict(n=(2, 8), p=(50, 90), np_="n * p", more=(20, 300), cap="np_ + more"),
       ["People: {n} x {p} = {np_} kg.", "Still allowed: {cap} - {np_} = {more} kg."], "more"),
    _t("farm_legs",
       "A farm has {c} chickens and {w} cows. How many legs do the animals have in total?",
       dict(c=(2, 30), w=(2, 20), cl="c * 2", wl="w * 4", ans="cl + wl"),
       ["Chicken legs: {c} x 2 = {cl}.", "Cow legs: {w} x 4 = {wl}.", "Total: {cl} + {wl} = {ans}."], "ans"),
    _t("library_week",
       "A library lends {a} books on each weekday and {b} books on each day of the weekend. How many books does "
       "it lend in a week?",
       dict(a=(20, 90), b=(10, 60), wd="5 * a", we="2 * b", ans="wd + we"),
       ["Weekdays: 5 x {a} = {wd}.", "Weekend: 2 x {b} = {we}.", "Week: {wd} + {we} = {ans} books."], "ans"),
    _t("half_then_third",
       "{name} had ${m}. {name} spent half of it on a game and then a third of what was left on a snack. How "
       "much money is left?",
       dict([N], k=(2, 15), m="6 * k", half="3 * k", third="k", ans="half - third"),
       ["After the game: ${m} / 2 = ${half}.", "The snack: ${half} / 3 = ${third}.",
        "Left: ${half} - ${third} = ${ans}."], "ans"),
    _t("train_stops",
       "A train travels {d} km at {v} km per hour and stops {s} times for {m} minutes each. How many minutes does "
       "the journey take?",
       dict(v=[30, 60, 90, 120], t=(1, 5), d="v * t", run="t * 60", s=(1, 5), m=(2, 10), stop="s * m",
            ans="run + stop"),
       ["Moving: {d} / {v} = {t} hours = {run} minutes.", "Stops: {s} x {m} = {stop} minutes.",
        "Journey: {run} + {stop} = {ans} minutes."], "ans"),
    _t("fruit_change",
       "Apples cost ${a} per kg and pears cost ${p} per kg. {name} buys {x} kg of apples and {y} kg of pears and "
       "pays with ${bill}. How much change does {name} get?",
       dict([N], a=(2, 5), p=(2, 6), x=(1, 5), y=(1, 5), ax="a * x", py="p * y", cost="ax + py",
            change=(1, 20), bill="cost + change"),
       ["Apples: {x} x ${a} = ${ax}.", "Pears: {y} x ${p} = ${py}.", "Cost: ${ax} + ${py} = ${cost}.",
        "Change: ${bill} - ${cost} = ${change}."], "change"),
    _t("coffee_weeks",
       "{name} drinks {c} cups of coffee every day. How many cups does {name} drink in {w} weeks?",
       dict([N], c=(1, 5), w=(2, 12), days="w * 7", ans="days * c"),
       ["{w} weeks is {w} x 7 = {days} days.", "Cups: {days} x {c} = {ans}."], "ans"),
    _t("candle_burn",
       "A candle is {h} cm tall and burns {r} cm every hour. How tall is it after {t} hours?",
       dict(r=(1, 3), t=(2, 8), burned="r * t", left=(1, 15), h="burned + left"),
       ["Burned: {r} x {t} = {burned} cm.", "Left: {h} - {burned} = {left} cm."], "left"),
    _t("can_drive",
       "A class wants to collect {goal} cans. {name} collects {a}, {name2} collects twice as many as {name}, and "
       "the rest of the class collects {c}. How many more cans are needed?",
       dict([N, N2], a=(5, 30), b="2 * a", c=(20, 100), have="a + b + c", more=(1, 50), goal="have + more"),
       ["{name2} collects 2 x {a} = {b}.", "Together: {a} + {b} + {c} = {have}.",
        "Still needed: {goal} - {have} = {more}."], "more"),
    _t("town_growth",
       "A town had {p} people. This year its population grew by {g}%. How many people live there now?",
       dict(k=(10, 90), p="100 * k", g=(2, 15), grow="k * g", ans="p + grow"),
       ["Growth: {g}% of {p} = {grow}.", "Now: {p} + {grow} = {ans} people."], "ans"),
    _t("parking_fee",
       "Parking costs ${f} for the first hour and ${e} for each extra hour. {name} parks for {h} hours. How much "
       "does {name} pay?",
       dict([N], f=(3, 10), e=(1, 5), h=(2, 9), x="h - 1", xe="x * e", ans="f + xe"),
       ["Extra hours: {h} - 1 = {x}.", "Extra cost: {x} x ${e} = ${xe}.", "Total: ${f} + ${xe} = ${ans}."], "ans"),
    _t("square_garden",
       "A square garden has a perimeter of {P} m. What is its area in square meters?",
       dict(s=(3, 30), P="4 * s", ans="s * s"),
       ["Side: {P} / 4 = {s} m.", "Area: {s} x {s} = {ans} square meters."], "ans"),
)

#: The template counts of the demo's ladder of subsets.
LADDER = (1, 4, 16, 64)


def _check_count(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return value


def sample_problems(template_ids: Sequence[int], n: int, rng: random.Random, *, unique: bool = True) -> list[dict]:
    """``n`` problems spread evenly over ``template_ids`` (row i uses template ``template_ids[i % len]``,
    then the rows are shuffled), numbers drawn from ``rng``.

    Args:
        template_ids: indices into :data:`TEMPLATES`.
        n: number of problems.
        rng: the seeded generator (consumed).
        unique: redraw a problem whose question is already in the list.

    Returns:
        list of ``n`` dicts ``{"question", "answer", "final_answer", "template"}``.
    """
    _check_count("n", n, 0)
    ids = list(template_ids)
    if not ids or any(not 0 <= t < len(TEMPLATES) for t in ids):
        raise ValueError(f"template_ids must be non-empty indices in [0, {len(TEMPLATES)}), got {ids!r}")
    seen: set[str] = set()
    rows = []
    for i in range(n):
        t = ids[i % len(ids)]
        for _ in range(1000):
            problem = TEMPLATES[t].sample(rng)
            if not unique or problem["question"] not in seen:
                break
        else:
            raise ValueError(f"template {TEMPLATES[t].name} cannot give {n} distinct problems")
        seen.add(problem["question"])
        rows.append({**problem, "template": t})
    rng.shuffle(rows)
    return rows


def demo_ladder(n_per_subset: int = 128, template_counts: Sequence[int] = LADDER, seed: int = 0) -> dict[int, list[dict]]:
    """The demo's subsets: for each count c, ``n_per_subset`` distinct problems drawn evenly from the
    first c templates (so a subset holds exactly c templates when ``n_per_subset >= c``).

    Deterministic given ``seed``; each subset has its own stream, so adding a count does not change
    the others.

    Returns:
        ``{c: [problem, ...]}`` with ``n_per_subset`` problems each, in the order of ``template_counts``.
    """
    _check_count("n_per_subset", n_per_subset)
    counts = [_check_count("template_counts entries", c) for c in template_counts]
    if not counts or max(counts) > len(TEMPLATES):
        raise ValueError(f"template_counts must be non-empty, each in [1, {len(TEMPLATES)}], got {template_counts!r}")
    if n_per_subset < max(counts):
        raise ValueError(f"n_per_subset={n_per_subset} is smaller than the largest template count {max(counts)}: "
                         "a subset could not hold every template")
    return {c: sample_problems(range(c), n_per_subset, random.Random(f"prism-demo-ladder:{seed}:{c}"))
            for c in counts}


def demo_pool(dense_templates: int = 4, dense_rows: int = 112, rare_templates: int = 8, rare_rows: int = 2,
              seed: int = 0) -> list[dict]:
    """The synthesis demos' pool: a skewed dataset, as real ones are. ``dense_rows`` problems spread over the
    first ``dense_templates`` templates and ``rare_rows`` problems of each of the next ``rare_templates``
    templates (the long tail), shuffled; the remaining templates are absent. Deterministic given ``seed``.

    Returns ``dense_rows + rare_templates * rare_rows`` dicts ``{"question", "answer", "final_answer",
    "template"}``.
    """
    _check_count("dense_templates", dense_templates)
    _check_count("dense_rows", dense_rows)
    _check_count("rare_templates", rare_templates, 0)
    _check_count("rare_rows", rare_rows, 0)
    if dense_templates + rare_templates > len(TEMPLATES):
        raise ValueError(f"dense_templates + rare_templates must be at most {len(TEMPLATES)}, got "
                         f"{dense_templates + rare_templates}")
    rng = random.Random(f"prism-demo-pool:{seed}")
    rows = sample_problems(range(dense_templates), dense_rows, rng)
    if rare_templates and rare_rows:
        rare = range(dense_templates, dense_templates + rare_templates)
        rows += sample_problems(rare, rare_templates * rare_rows, rng)
    rng.shuffle(rows)
    return rows


def subset_name(count: int) -> str:
    """File stem of the subset drawn from ``count`` templates, e.g. ``"templates-16"``."""
    return f"templates-{count:02d}"


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Writes ``rows`` as JSON lines to ``path`` atomically (prism_kernels.score.rundir.atomic_write)."""
    from prism_kernels.score.rundir import atomic_write

    return atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_ladder(out_dir: str | os.PathLike, n_per_subset: int = 128, template_counts: Sequence[int] = LADDER,
                 seed: int = 0) -> dict[int, Path]:
    """Writes :func:`demo_ladder` to ``out_dir/templates-NN.jsonl`` (fields question, answer,
    final_answer, template) and returns ``{c: path}``."""
    ladder = demo_ladder(n_per_subset, template_counts, seed)
    return {c: write_jsonl(Path(out_dir) / f"{subset_name(c)}.jsonl", rows) for c, rows in ladder.items()}


def training_corpus(n: int, seed: int = 0) -> list[dict]:
    """``n`` problems spread evenly over all templates, for training the demo LM (a stream separate
    from the ladder's; questions may repeat across the two)."""
    return sample_problems(range(len(TEMPLATES)), n, random.Random(f"prism-demo-corpus:{seed}"), unique=False)


def to_messages(problem: dict) -> list[dict]:
    """The chat form ``[{"role": "user", ...}, {"role": "assistant", ...}]`` of a problem."""
    return [{"role": "user", "content": problem["question"]}, {"role": "assistant", "content": problem["answer"]}]
