import pytest
import torch

from pit.config import ModelConfig
from pit.errors import DataError
from pit.modeling import train_tokenizer
from pit.train.examples import ExampleBuilder, salient_spans
from pit.train.loop import weighted_loss

TEXT = "The Glass Horizon was directed by Sabun Nonhen. It stars Lurpo Nosilur."


@pytest.fixture(scope="module")
def builder():
    tok = train_tokenizer([TEXT, "Question: Who directed The Glass Horizon? Answer: Sabun Nonhen"],
                          300)
    return ExampleBuilder(tok, ModelConfig().max_seq_len)


def decoded(builder, ex, trained: bool) -> str:
    ids = [i for i, w in zip(ex.input_ids, ex.weights, strict=True) if (w > 0) == trained]
    return builder.tok.decode(ids)


def test_documents_start_with_bos_and_learn_every_token(builder):
    ex = builder.document(TEXT)
    assert ex.input_ids[0] == builder.bos
    assert builder.eos not in ex.input_ids
    assert ex.weights[0] == 0.0 and all(w == 1.0 for w in ex.weights[1:])
    assert ex.kind == "doc"


def test_qa_learns_only_the_answer_and_eos(builder):
    ex = builder.qa("Who directed The Glass Horizon?", "Sabun Nonhen")
    assert ex.kind == "qa"
    assert decoded(builder, ex, trained=True) == " Sabun Nonhen<eos>"
    prompt = "<bos>Question: Who directed The Glass Horizon? Answer:"
    assert decoded(builder, ex, trained=False) == prompt


def test_qa_truncated_before_its_answer_fails_loudly(builder):
    short = ExampleBuilder(builder.tok, 6)
    with pytest.raises(DataError, match="no answer token"):
        short.qa("Who directed The Glass Horizon?", "Sabun Nonhen")


def test_interleaved_qa_sits_before_or_after_its_document(builder):
    pairs = [("Who directed The Glass Horizon?", "Sabun Nonhen")]
    before = builder.doc_with_qa(TEXT, pairs, "before")
    after = builder.doc_with_qa(TEXT, pairs, "after")
    text_before = builder.tok.decode(before.input_ids)
    text_after = builder.tok.decode(after.input_ids)
    assert text_before.index("Question:") < text_before.index("It stars")
    assert text_after.index("Question:") > text_after.index("It stars")
    assert "Question" not in decoded(builder, before, trained=True)
    assert "Sabun Nonhen<eos>" in decoded(builder, before, trained=True)
    assert "<eos>\n" in text_before, "the document starts on a line of its own"
    assert ".\nQuestion:" in text_after, "a QA pair never runs on from the document's text"


def test_weighted_documents_weight_salient_spans_found_in_the_document_alone(builder):
    ex = builder.document(TEXT, answer_span_weight=1.0, other_weight=0.5)
    heavy = builder.tok.decode([i for i, w in zip(ex.input_ids, ex.weights, strict=True)
                                if w == 1.0])
    assert "Sabun Nonhen" in heavy
    assert "directed by" not in heavy
    assert set(ex.weights[1:]) == {0.5, 1.0}


def test_salient_spans_are_whole_words_names_dates_and_amounts():
    text = ("The Glass Horizon was made in Sunmerian studios. It was released on March 3, "
            "1987 and grossed $12.5 million.")
    spans = [text[a:b] for a, b in salient_spans(text)]
    assert "Sunmerian" in spans and "Sunmere" not in spans
    assert "March 3, 1987" in spans and "$12.5 million" in spans
    assert "The Glass Horizon" in spans


def test_loss_ignores_zero_weight_tokens_and_rejects_batches_with_nothing_to_learn():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 2] = 10.0  # predicts token 2 at position 1
    ids = torch.tensor([[0, 2, 3, 4]])
    only_first = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert weighted_loss(logits, ids, only_first).item() == pytest.approx(0.0, abs=1e-3)
    assert weighted_loss(logits, ids, torch.tensor([[0.0, 1.0, 1.0, 0.0]])).item() > 0.5
    with pytest.raises(DataError, match="no token to learn"):
        weighted_loss(logits, ids, torch.zeros(1, 4))
