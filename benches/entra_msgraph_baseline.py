"""Baseline for benches/entra.rs: Microsoft's Python SDK (msgraph-sdk) walking the same
/users/delta round of the same mock Graph. Usage: python entra_msgraph_baseline.py BASE
where BASE is the mock's Graph root (http://127.0.0.1:PORT/v1.0). Prints users, pages, seconds.

The mock accepts any `Bearer mock-token-*`; the token is set on the HTTP client (with
kiota's anonymous auth provider) so that azure-identity and its https-only authority
handling stay out of the measurement."""

import asyncio
import sys
import time

import httpx
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph_core import GraphClientFactory

SELECT = ["id", "userPrincipalName", "mail", "givenName", "surname", "displayName",
          "department", "jobTitle", "employeeId", "accountEnabled", "userType", "manager"]


async def main(base: str) -> None:
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(headers={"Authorization": "Bearer mock-token-baseline"}, timeout=120)
    )
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider(), client=http)
    adapter.base_url = base
    client = GraphServiceClient(request_adapter=adapter)
    started = time.perf_counter()
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT)
    page = await client.users.delta.get(request_configuration=RequestConfiguration(query_parameters=query))
    users, pages = len(page.value or []), 1
    while page.odata_next_link:
        page = await client.users.delta.with_url(page.odata_next_link).get()
        users += len(page.value or [])
        pages += 1
    print(f"{users} {pages} {time.perf_counter() - started:.3f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
