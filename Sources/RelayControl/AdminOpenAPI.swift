/// The admin API's OpenAPI 3.1 document, served at GET /api/v1/openapi.json.
/// Tests/integration/test_admin_api.py checks it against the routes both ways: every
/// documented operation is routed, every route (AdminAPI.routes) is documented.
enum AdminOpenAPI {
    static let document = #"""
{
 "openapi": "3.1.0",
 "info": {
  "title": "relay admin API",
  "version": "1.0.0",
  "description": "See and run the fleet: live device state from the running relay's core, provisioning, tokens and sessions. Every route but this document and the console page needs `Authorization: Bearer <admin key>` (`relay admin-key create`)."
 },
 "security": [
  {
   "adminKey": []
  }
 ],
 "paths": {
  "/api/v1/openapi.json": {
   "get": {
    "summary": "This document",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "OpenAPI 3.1",
      "content": {
       "application/json": {}
      }
     }
    },
    "security": []
   }
  },
  "/api/v1/summary": {
   "get": {
    "summary": "Fleet counts",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Counts",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/Summary"
        }
       }
      }
     },
     "503": {
      "$ref": "#/components/responses/CoreNotAnswering"
     }
    }
   }
  },
  "/api/v1/devices": {
   "get": {
    "summary": "List devices, ordered by ID, paged by cursor",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "A page",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/DevicePage"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadQuery"
     }
    },
    "parameters": [
     {
      "name": "limit",
      "in": "query",
      "schema": {
       "type": "integer",
       "minimum": 1,
       "maximum": 1000,
       "default": 100
      }
     },
     {
      "name": "after",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "Cursor: the `next` of the previous page"
     },
     {
      "name": "online",
      "in": "query",
      "schema": {
       "type": "boolean"
      },
      "description": "Only online (true) or offline (false) devices; at most 50000 are looked at per request, then `next` continues"
     },
     {
      "name": "search",
      "in": "query",
      "schema": {
       "type": "string"
      },
      "description": "Only IDs containing this"
     }
    ]
   },
   "post": {
    "summary": "Provision a device; the secret is returned once",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "201": {
      "description": "Provisioned",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/NewDevice"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadBodyOrId"
     },
     "409": {
      "$ref": "#/components/responses/Exists"
     },
     "413": {
      "$ref": "#/components/responses/BodyTooLarge"
     },
     "507": {
      "$ref": "#/components/responses/RegistryFull"
     }
    },
    "requestBody": {
     "required": true,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "required": [
         "id"
        ],
        "properties": {
         "id": {
          "type": "string"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/devices/{id}": {
   "parameters": [
    {
     "name": "id",
     "in": "path",
     "required": true,
     "schema": {
      "type": "string",
      "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
     },
     "description": "Device ID"
    }
   ],
   "get": {
    "summary": "One device with address history, last wakes, sessions and tokens",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "The device",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/DeviceDetail"
        }
       }
      }
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     }
    }
   },
   "delete": {
    "summary": "Deprovision a device: its sessions end, its tokens stop working",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Removed",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "removed": {
           "type": "string"
          }
         }
        }
       }
      }
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     }
    }
   }
  },
  "/api/v1/devices/{id}/secret": {
   "parameters": [
    {
     "name": "id",
     "in": "path",
     "required": true,
     "schema": {
      "type": "string",
      "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
     },
     "description": "Device ID"
    }
   ],
   "post": {
    "summary": "Rotate the device secret (returned once); old tokens stop working",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "New secret",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "id": {
           "type": "string"
          },
          "secret": {
           "type": "string"
          }
         }
        }
       }
      }
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     }
    }
   }
  },
  "/api/v1/devices/{id}/tokens": {
   "parameters": [
    {
     "name": "id",
     "in": "path",
     "required": true,
     "schema": {
      "type": "string",
      "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
     },
     "description": "Device ID"
    }
   ],
   "get": {
    "summary": "The device's tokens",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Tokens",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/TokenList"
        }
       }
      }
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     }
    },
    "parameters": [
     {
      "name": "all",
      "in": "query",
      "schema": {
       "type": "boolean"
      },
      "description": "Include expired ones"
     }
    ]
   },
   "post": {
    "summary": "Mint a terminal token",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "201": {
      "description": "Minted",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/NewToken"
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/BadTtlOrBody"
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     },
     "413": {
      "$ref": "#/components/responses/BodyTooLarge"
     }
    },
    "requestBody": {
     "required": false,
     "content": {
      "application/json": {
       "schema": {
        "type": "object",
        "properties": {
         "ttl": {
          "type": "string",
          "description": "Duration: 90, 30m, 24h, 7d (default 24h)"
         }
        }
       }
      }
     }
    }
   }
  },
  "/api/v1/tokens": {
   "get": {
    "summary": "Tokens of every device",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Tokens",
      "content": {
       "application/json": {
        "schema": {
         "$ref": "#/components/schemas/TokenList"
        }
       }
      }
     },
     "404": {
      "$ref": "#/components/responses/UnknownDevice"
     }
    },
    "parameters": [
     {
      "name": "device",
      "in": "query",
      "schema": {
       "type": "string"
      }
     },
     {
      "name": "all",
      "in": "query",
      "schema": {
       "type": "boolean"
      }
     }
    ]
   }
  },
  "/api/v1/tokens/{tid}": {
   "parameters": [
    {
     "name": "tid",
     "in": "path",
     "required": true,
     "schema": {
      "type": "string",
      "pattern": "^[0-9a-f]{16}$"
     }
    }
   ],
   "delete": {
    "summary": "Revoke a token: refused by the relay when this returns",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Revoked",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "revoked": {
           "type": "array",
           "items": {
            "type": "string"
           }
          }
         }
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/NotATokenId"
     },
     "404": {
      "$ref": "#/components/responses/UnknownToken"
     }
    }
   }
  },
  "/api/v1/sessions": {
   "get": {
    "summary": "Live sessions (waking, bound or idle), at most 1000",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Sessions",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "sessions": {
           "type": "array",
           "items": {
            "$ref": "#/components/schemas/Session"
           }
          },
          "total": {
           "type": "integer"
          }
         }
        }
       }
      }
     }
    },
    "parameters": [
     {
      "name": "device",
      "in": "query",
      "schema": {
       "type": "string"
      }
     }
    ]
   }
  },
  "/api/v1/sessions/{sid}": {
   "parameters": [
    {
     "name": "sid",
     "in": "path",
     "required": true,
     "schema": {
      "type": "string",
      "pattern": "^[0-9a-f]{32}$"
     }
    }
   ],
   "delete": {
    "summary": "End a session: its terminal and device link are closed",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Ended",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "ended": {
           "type": "string"
          }
         }
        }
       }
      }
     },
     "400": {
      "$ref": "#/components/responses/NotASessionId"
     },
     "404": {
      "$ref": "#/components/responses/UnknownSession"
     }
    }
   }
  },
  "/api/v1/sync": {
   "post": {
    "summary": "Apply the store's changes (made by the CLI) to the running relay now",
    "responses": {
     "401": {
      "$ref": "#/components/responses/MissingOrWrongAdminKey"
     },
     "200": {
      "description": "Applied",
      "content": {
       "application/json": {
        "schema": {
         "type": "object",
         "properties": {
          "seq": {
           "type": "integer"
          }
         }
        }
       }
      }
     }
    }
   }
  }
 },
 "components": {
  "securitySchemes": {
   "adminKey": {
    "type": "http",
    "scheme": "bearer",
    "description": "An admin key from `relay admin-key create`"
   }
  },
  "schemas": {
   "Error": {
    "type": "object",
    "required": [
     "error"
    ],
    "properties": {
     "error": {
      "type": "string"
     }
    }
   },
   "Wake": {
    "type": "object",
    "properties": {
     "at": {
      "type": "string",
      "format": "date-time"
     },
     "outcome": {
      "type": "string",
      "enum": [
       "bound",
       "timeout"
      ]
     },
     "latency_ms": {
      "type": "number"
     }
    }
   },
   "Device": {
    "type": "object",
    "required": [
     "id",
     "online",
     "last_notify_a_age_s",
     "address",
     "address_changes",
     "sessions",
     "last_wake",
     "created",
     "offline_reason"
    ],
    "properties": {
     "id": {
      "type": "string"
     },
     "online": {
      "type": "boolean"
     },
     "last_notify_a_age_s": {
      "type": [
       "integer",
       "null"
      ],
      "description": "Seconds since its last notify A; null: none since the relay started"
     },
     "address": {
      "type": [
       "string",
       "null"
      ],
      "description": "Public ip:port the relay sees"
     },
     "address_changes": {
      "type": "integer",
      "description": "While in the side table of recently moved or woken devices"
     },
     "sessions": {
      "type": "integer"
     },
     "last_wake": {
      "oneOf": [
       {
        "$ref": "#/components/schemas/Wake"
       },
       {
        "type": "null"
       }
      ]
     },
     "created": {
      "type": "string",
      "format": "date-time"
     },
     "offline_reason": {
      "type": [
       "string",
       "null"
      ],
      "description": "Why the relay would answer 503 now (never notified, last notify too old, its agent left, an unanswered wake); null when online"
     }
    }
   },
   "DevicePage": {
    "type": "object",
    "properties": {
     "devices": {
      "type": "array",
      "items": {
       "$ref": "#/components/schemas/Device"
      }
     },
     "next": {
      "type": [
       "string",
       "null"
      ]
     },
     "scanned": {
      "type": "integer"
     }
    }
   },
   "DeviceDetail": {
    "allOf": [
     {
      "$ref": "#/components/schemas/Device"
     },
     {
      "type": "object",
      "properties": {
       "tracked": {
        "type": "boolean"
       },
       "address_history": {
        "type": "array",
        "items": {
         "type": "object",
         "properties": {
          "at": {
           "type": "string"
          },
          "address": {
           "type": "string"
          }
         }
        }
       },
       "wakes": {
        "type": "array",
        "items": {
         "$ref": "#/components/schemas/Wake"
        }
       },
       "session_list": {
        "type": "array",
        "items": {
         "$ref": "#/components/schemas/Session"
        }
       },
       "tokens": {
        "type": "array",
        "items": {
         "$ref": "#/components/schemas/Token"
        }
       }
      }
     }
    ]
   },
   "NewDevice": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "secret": {
      "type": "string"
     },
     "created": {
      "type": "string"
     }
    }
   },
   "Token": {
    "type": "object",
    "properties": {
     "tid": {
      "type": "string"
     },
     "device": {
      "type": "string"
     },
     "created": {
      "type": "string"
     },
     "expires": {
      "type": "string"
     },
     "state": {
      "type": "string",
      "enum": [
       "valid",
       "expired",
       "revoked"
      ]
     }
    }
   },
   "TokenList": {
    "type": "object",
    "properties": {
     "tokens": {
      "type": "array",
      "items": {
       "$ref": "#/components/schemas/Token"
      }
     }
    }
   },
   "NewToken": {
    "type": "object",
    "properties": {
     "token": {
      "type": "string"
     },
     "tid": {
      "type": "string"
     },
     "device": {
      "type": "string"
     },
     "expires": {
      "type": "string"
     }
    }
   },
   "Session": {
    "type": "object",
    "properties": {
     "id": {
      "type": "string"
     },
     "device": {
      "type": "string"
     },
     "state": {
      "type": "string",
      "enum": [
       "waking",
       "bound",
       "idle"
      ]
     },
     "age_ms": {
      "type": "integer"
     },
     "terminal": {
      "type": [
       "string",
       "null"
      ]
     },
     "bytes_to_device": {
      "type": "integer"
     },
     "bytes_to_terminal": {
      "type": "integer"
     }
    }
   },
   "Summary": {
    "type": "object",
    "properties": {
     "devices": {
      "type": "integer"
     },
     "online": {
      "type": "integer"
     },
     "never_notified": {
      "type": "integer"
     },
     "capacity": {
      "type": "integer"
     },
     "sessions": {
      "type": "integer"
     },
     "tracked": {
      "type": "integer"
     },
     "period_s": {
      "type": "integer"
     },
     "unauthorized_requests": {
      "type": "integer"
     },
     "page_requests": {
      "type": "integer",
      "description": "Device page lookups the core answered"
     },
     "page_loop_us_total": {
      "type": "integer",
      "description": "Time they held the loop thread, microseconds"
     },
     "page_loop_us_max": {
      "type": "integer",
      "description": "Longest one, microseconds"
     },
     "summary_loop_us": {
      "type": "integer",
      "description": "This summary's pass over the registry, microseconds"
     },
     "summary_chunks": {
      "type": "integer",
      "description": "Loop callbacks that pass took (65536 registry entries each)"
     }
    }
   }
  },
  "responses": {
   "MissingOrWrongAdminKey": {
    "description": "Missing or wrong admin key",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "CoreNotAnswering": {
    "description": "Core not answering",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "BadQuery": {
    "description": "Bad query",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "BadBodyOrId": {
    "description": "Bad body or ID",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "Exists": {
    "description": "Exists",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "BodyTooLarge": {
    "description": "Body too large",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "RegistryFull": {
    "description": "Registry full",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "UnknownDevice": {
    "description": "Unknown device",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "BadTtlOrBody": {
    "description": "Bad ttl or body",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "NotATokenId": {
    "description": "Not a token ID",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "UnknownToken": {
    "description": "Unknown token",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "NotASessionId": {
    "description": "Not a session ID",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   },
   "UnknownSession": {
    "description": "Unknown session",
    "content": {
     "application/json": {
      "schema": {
       "$ref": "#/components/schemas/Error"
      }
     }
    }
   }
  }
 }
}
"""#
}
