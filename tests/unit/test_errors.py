from bridge import errors


def all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from all_subclasses(sub)


def test_every_error_has_a_unique_slug_a_title_and_an_http_status():
    classes = [errors.BridgeError, *all_subclasses(errors.BridgeError)]
    slugs = [c.slug for c in classes]
    assert len(slugs) == len(set(slugs)), slugs
    for c in classes:
        assert c.title and 400 <= c.status < 600
        e = c("boom", data={"k": 1})
        assert e.msg == "boom" and e.data.items() >= {"k": 1}.items() and e.problem_type.endswith("/" + c.slug)
        assert c().msg == c.title
