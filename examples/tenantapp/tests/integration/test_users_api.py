import pytest

pytestmark = pytest.mark.integration


def _invite(client, headers, **overrides):
    body = {"email": "new.person@tenantapp.example", "name": "New Person", "auth0_id": "auth0|new-person"}
    body.update(overrides)
    return client.post("/users", json=body, headers=headers)


@pytest.mark.critical
def test_me(client, auth_headers, test_org):
    response = client.get("/me", headers=auth_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == test_org.owner.email
    assert body["organization_id"] == str(test_org.id)
    assert body["is_superuser"] is True


def test_list_users_of_own_organization_only(client, auth_headers, test_org):
    emails = sorted(u["email"] for u in client.get("/users", headers=auth_headers).json())
    assert emails == sorted([test_org.owner.email, test_org.members[0].email])


def test_admin_invites_user(client, auth_headers, make_headers, test_org):
    response = _invite(client, auth_headers)
    assert response.status_code == 201
    invited = response.json()
    assert invited["is_superuser"] is False
    # The invited user can now authenticate.
    headers = make_headers("auth0|new-person", test_org)
    assert client.get("/me", headers=headers).json()["id"] == invited["id"]


def test_duplicate_email_is_409_and_the_session_recovers(client, auth_headers):
    assert _invite(client, auth_headers).status_code == 201
    assert _invite(client, auth_headers, auth0_id="auth0|other").status_code == 409
    # The failed INSERT was rolled back without poisoning the request that follows.
    assert client.get("/users", headers=auth_headers).status_code == 200


def test_same_email_may_exist_in_two_organizations(client, auth_headers, other_headers):
    assert _invite(client, auth_headers, email="shared@example.org").status_code == 201
    assert _invite(client, other_headers, email="shared@example.org").status_code == 201


def test_member_updates_own_profile(client, member_headers, test_org):
    member = test_org.members[0]
    response = client.patch(f"/users/{member.id}", json={"given_name": "Mía"}, headers=member_headers)
    assert response.status_code == 200
    assert response.json()["given_name"] == "Mía"


def test_deactivated_user_can_no_longer_authenticate(client, auth_headers, member_headers, test_org):
    assert client.delete(f"/users/{test_org.members[0].id}", headers=auth_headers).status_code == 204
    assert client.get("/me", headers=member_headers).status_code == 401


def test_admin_cannot_deactivate_self(client, auth_headers, test_org):
    assert client.delete(f"/users/{test_org.owner.id}", headers=auth_headers).status_code == 409


def test_search_users(client, auth_headers):
    response = client.get("/users", params={"search": "mia"}, headers=auth_headers)
    assert [u["name"] for u in response.json()] == ["Mia Member"]
