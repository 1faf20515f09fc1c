"""The admin GraphQL API (/admin/gql): an SDL schema executed by graphql-core, resolvers over the services."""
