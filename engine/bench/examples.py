"""The training bench's examples: chat turns of mixed length, as real feedback is (one-line fixes
next to long explanations). Both trainers get exactly these, in the same order."""

from __future__ import annotations

SHORT = [
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is 12 times 12?", "12 times 12 is 144."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice', published in 1813."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius (212 °F) at sea level."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Name the largest planet in the solar system.", "Jupiter is the largest planet in the solar system."),
]

MEDIUM = [
    ("Why do we have seasons?",
     "Seasons happen because Earth's axis is tilted by about 23.5 degrees. As Earth orbits the Sun, each "
     "hemisphere takes turns leaning toward the Sun, getting more direct sunlight and longer days (summer), "
     "then leaning away, getting slanted light and shorter days (winter). The distance to the Sun matters "
     "very little."),
    ("What is the difference between a list and a tuple in Python?",
     "Both hold ordered sequences, but a list is mutable: you can append, remove and change items. A tuple is "
     "immutable: once created it cannot change. Tuples can be dictionary keys and signal 'this is fixed', "
     "while lists suit collections that grow or change."),
    ("Give me three tips for sleeping better.",
     "1. Keep a regular schedule: go to bed and get up at the same time every day, weekends included.\n"
     "2. Make the bedroom dark, quiet and cool, and keep screens out of it for the last hour.\n"
     "3. Avoid caffeine after early afternoon and large meals or alcohol late in the evening."),
    ("How does a refrigerator keep food cold?",
     "A refrigerator moves heat rather than making cold. A refrigerant absorbs heat inside the fridge as it "
     "evaporates in the coils, a compressor squeezes the warm vapour, and the coils at the back release that "
     "heat into the kitchen as it condenses. Then it expands and cools again, and the cycle repeats."),
    ("What is compound interest?",
     "Compound interest is interest earned on both your original money and on the interest already added. "
     "If you invest 100 at 10% a year, you have 110 after one year and 121 after two, because the second "
     "year's interest is paid on 110. Over long periods this makes savings grow much faster than simple "
     "interest."),
    ("Summarise the plot of Romeo and Juliet in a few sentences.",
     "Two teenagers from feuding families in Verona, Romeo Montague and Juliet Capulet, fall in love and "
     "marry in secret. After Romeo kills Juliet's cousin in a fight, he is banished. Juliet fakes her death "
     "to escape an arranged marriage, but the message explaining the plan never reaches Romeo. Believing "
     "she is dead, he poisons himself; she wakes, finds him, and kills herself. Their deaths reconcile the "
     "families."),
    ("What should I check before buying a used car?",
     "Check the service history and the number of previous owners, and run the registration through a "
     "vehicle history service for accidents or outstanding finance. Inspect the tyres, look for rust and "
     "uneven panel gaps, and make sure every light and switch works. Take a test drive on different roads, "
     "listening for knocks and checking that the brakes and gearbox feel smooth. If you are unsure, pay a "
     "mechanic for an independent inspection."),
    ("Explain what a firewall does.",
     "A firewall sits between a network or computer and the outside world and decides which traffic may "
     "pass. It applies rules based on addresses, ports and protocols, and often on the state of a "
     "connection, so that replies to your requests get through while unsolicited connections are blocked."),
]

LONG = [
    ("Explain how vaccines train the immune system.",
     "A vaccine shows the immune system a harmless version or piece of a germ so that it can learn to "
     "recognise the real thing without the danger of the disease.\n\n"
     "When the vaccine is given, cells called antigen-presenting cells pick up the foreign material and "
     "display fragments of it. Helper T cells recognise these fragments and activate B cells, which begin "
     "producing antibodies that fit the germ's surface proteins precisely. Killer T cells are also trained "
     "to destroy infected cells.\n\n"
     "Most of these cells die off after a few weeks, but some become long-lived memory cells. If the real "
     "germ appears later, the memory cells recognise it at once and mount a fast, strong response, often "
     "clearing the infection before you feel ill. Some vaccines need booster doses because memory fades "
     "over time, or because the germ changes, as influenza does every year."),
    ("How do I start learning to program?",
     "Start with one beginner-friendly language; Python is a common choice because its syntax is readable "
     "and it is useful for many things.\n\n"
     "1. Install Python and a simple editor such as VS Code, or use an online environment so you can start "
     "today.\n"
     "2. Follow one structured course or book from start to finish instead of jumping between tutorials. "
     "Type the examples yourself rather than copying them.\n"
     "3. Practise a little every day. Thirty minutes daily beats a long session once a week.\n"
     "4. Build small projects as soon as you can: a calculator, a to-do list, a script that renames your "
     "photos. Projects teach you to break problems down and to search for answers.\n"
     "5. Learn to read error messages carefully; they usually tell you what went wrong and where.\n"
     "6. Read other people's code and ask questions in communities when you are stuck.\n\n"
     "Expect to feel confused at times. That is normal, and it fades as the basic ideas of variables, "
     "loops, functions and data structures become familiar."),
    ("What caused the fall of the Western Roman Empire?",
     "Historians point to several causes that reinforced each other over about two centuries rather than a "
     "single event.\n\n"
     "Politically, the empire suffered from frequent civil wars and short-lived emperors, which drained "
     "money and attention. Economically, heavy taxation, inflation from debased coinage and disrupted trade "
     "weakened the cities and the state's finances. Militarily, Rome relied more and more on Germanic "
     "troops and allied peoples whose loyalty was uncertain, while pressure on the frontiers grew as groups "
     "such as the Goths, Vandals and Huns moved west.\n\n"
     "The division of the empire into eastern and western halves left the poorer West to face these "
     "pressures with fewer resources. Key provinces were lost, including North Africa to the Vandals in 439, "
     "which cut the West off from vital tax revenue and grain. By 476, when the Germanic general Odoacer "
     "deposed the last western emperor, Romulus Augustulus, the western government had little real power "
     "left. The eastern half, the Byzantine Empire, survived for almost another thousand years."),
    ("Write a short product description for a reusable water bottle.",
     "Meet the bottle that goes wherever you do. Made from double-walled stainless steel, it keeps drinks "
     "cold for 24 hours and hot for 12, without sweating in your bag. The leak-proof lid locks with a "
     "quarter turn, and the wide mouth fits ice cubes and makes cleaning easy.\n\n"
     "At 750 ml it holds enough for a long hike or a full day at your desk, yet it is light enough to "
     "carry all day. It is free of BPA, dishwasher safe and built to last for years, so you can leave "
     "single-use plastic behind. Available in six colours, with a lifetime guarantee."),
    ("Describe how to make a simple tomato pasta sauce.",
     "You need a tin of chopped tomatoes, two cloves of garlic, olive oil, salt, a pinch of sugar and a few "
     "basil leaves.\n\n"
     "Warm three tablespoons of olive oil in a pan over a low heat and add the finely sliced garlic. Let it "
     "sizzle gently for a minute without browning. Pour in the tomatoes, add a good pinch of salt and a "
     "small pinch of sugar to balance the acidity, and bring to a simmer.\n\n"
     "Cook uncovered for 15 to 20 minutes, stirring now and then, until the sauce thickens and the oil "
     "starts to separate at the edges. Taste and adjust the salt. Tear in the basil just before serving and "
     "toss with freshly cooked pasta, adding a splash of the pasta water to help the sauce cling."),
    ("What are the pros and cons of working from home?",
     "Pros:\n"
     "- No commute, which saves time and money and reduces stress.\n"
     "- More flexibility to arrange the day around personal needs.\n"
     "- Fewer interruptions for focused work, for many people.\n"
     "- Access to jobs regardless of where you live.\n\n"
     "Cons:\n"
     "- Isolation and less spontaneous contact with colleagues.\n"
     "- Blurred boundaries between work and home life, making it harder to switch off.\n"
     "- Communication takes more effort and can be slower.\n"
     "- Home may lack a proper desk, chair or quiet space.\n\n"
     "Many people find that a hybrid arrangement, with a few days in the office and the rest at home, "
     "keeps most of the benefits while reducing the drawbacks."),
    ("Explain the difference between weather and climate.",
     "Weather is what the atmosphere is doing at a particular place and time: today's temperature, rain, "
     "wind and cloud. It changes from hour to hour and day to day, and forecasts can predict it reliably "
     "only about a week or so ahead.\n\n"
     "Climate is the long-term pattern of weather in a region, usually described by averages and extremes "
     "over thirty years or more. A place with a Mediterranean climate, for example, typically has hot, dry "
     "summers and mild, wet winters, even though any single summer day might be cool and rainy.\n\n"
     "A simple way to remember it: climate is what you expect, weather is what you get. That is why one "
     "cold winter does not disprove global warming, which describes a change in the long-term averages."),
    ("How does the internet route a message from my computer to a website?",
     "Your message is cut into small packets, each labelled with the source and destination IP addresses.\n\n"
     "First, your computer asks a DNS server to translate the website's name into an IP address. Then the "
     "packets go to your home router, which forwards them to your internet provider. From there they hop "
     "across a chain of routers run by different networks. Each router looks at the destination address "
     "and passes the packet to the neighbour that is closest to it, using routing tables that networks "
     "share with each other through a protocol called BGP.\n\n"
     "Packets can take different paths and arrive out of order. At the website's server, the TCP protocol "
     "puts them back in order, asks for any missing ones to be sent again, and hands the complete request "
     "to the web server software. The reply travels back the same way, usually in a fraction of a second."),
]


def bench_rows() -> list[dict]:
    """Prompt-completion rows (the shape engine.train.data gives TRL), lengths mixed the way a batch
    of real feedback mixes them: short, medium and long in turn."""
    from engine.prompts import system_prompt

    system = {"role": "system", "content": system_prompt("default")}
    pairs = [p for group in zip(SHORT, MEDIUM, LONG, strict=True) for p in group]
    return [{"prompt": [system, {"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]}
            for q, a in pairs]
